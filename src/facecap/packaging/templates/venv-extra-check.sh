  if [ "$SYSTEM_SITE_PACKAGES" = true ] && ! "$VENV_DIR/bin/python" -c "import cv2"; then
    echo "systemSitePackages is true but $PYTHON_FOR_VENV has no OpenCV (import cv2)" >&2
    exit 1
  fi
