if [ "$SYSTEM_SITE_PACKAGES" = true ]; then
  venv_options="--system-site-packages"
else
  requirement="${WHEEL_FILE}[@EXTRA@]"
fi
