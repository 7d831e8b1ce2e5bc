mosquitto="$FACECAP_MOSQUITTO_PATH"
if [ -z "$mosquitto" ]; then
  mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
fi
if [ ! -x "$mosquitto" ] && [ "$INSTALL_MOSQUITTO" = true ] && [ -z "$FACECAP_MOSQUITTO_PATH" ]; then
  export DEBIAN_FRONTEND=noninteractive
  # Wait for an unattended upgrade's dpkg lock instead of failing at once.
  apt-get -o DPkg::Lock::Timeout=120 update
  apt-get -o DPkg::Lock::Timeout=120 install -y --no-install-recommends mosquitto
  # The package starts its own broker on port 1883, where this component's broker listens.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now mosquitto || true; fi
  mosquitto=/usr/sbin/mosquitto
fi
if [ ! -x "$mosquitto" ]; then
  echo "mosquitto not found: apt-get install mosquitto, set installMosquitto to true, or set" \
    "mosquittoPath" >&2
  exit 1
fi
# The rest as the component's user, who owns the work folder (the nucleus makes it so before each
# step): nothing in it ends up owned by root, and pip never runs as root.
as_owner=""
if [ "$(id -u)" -eq 0 ] && [ "$(stat -c %u .)" -ne 0 ]; then
  as_owner="setpriv --reuid=$(stat -c %u .) --regid=$(stat -c %g .) --init-groups --"
fi
