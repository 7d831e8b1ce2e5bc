"""The FaceDetector: camera frames in, best-shot face crops out as contract v1 MQTT messages.

Modules, from the camera to the broker: camera (frame sources with reconnect), detection (YuNet or
Haar), tracking (pure: follow faces, choose what to send), crop (pure: padding, quality, encoding),
publisher (non-blocking, bounded), capture (a camera's capture loop), feeds (a camera's capture thread and
frame queue), scheduling (the detection workers, round-robin over the cameras), runner (the wiring:
DetectorRunner). The CLI is facecap.commands.detector. Importing this package does not import OpenCV.
"""
