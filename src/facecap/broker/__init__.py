"""EdgeBroker: Mosquitto on the device, with a lossless bridge of the faces topics to the cloud broker."""
