if [ "$SYSTEM_SITE_PACKAGES" = true ]; then
  # The system's packages of the extra (JetPack's OpenCV, built with GStreamer, and its NumPy) are used.
  inherit_system=true
else
  set -- "$@" -r "$wheelhouse/requirements-$abi-@EXTRA@.txt"
fi
