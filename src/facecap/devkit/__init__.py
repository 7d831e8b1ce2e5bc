"""The development kit: what `facecap demo`, the tests and the benchmarks need and a device never does
(real Mosquitto and SeaweedFS launchers, a certificate authority, a cuttable link, the local pipeline).

It is part of the source distribution but not of the device wheel that components/build.py makes, and no
runtime module imports it (tests/test_layout.py checks both)."""
