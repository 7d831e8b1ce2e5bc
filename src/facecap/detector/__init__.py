"""The FaceDetector: camera frames in, best-shot face crops out as contract v1 MQTT messages.

Modules, from the camera to the broker: camera (frame sources with reconnect), detection (YuNet or
Haar), tracking (pure: follow faces, choose what to send), crop (pure: padding, quality, encoding),
publisher (non-blocking, bounded), capture (a camera's capture loop), feeds (a camera's capture thread and
frame queue), scheduling (the detection workers, round-robin over the cameras), runner (the wiring:
DetectorRunner). The CLI is facecap.commands.detector. Importing this package does not import OpenCV.
"""

import os

# OpenCV serializes every FFmpeg open in the process behind one lock unless told FFmpeg is thread-safe
# (FFmpeg 4 and later are; OpenCV reads this once, when cv2 is first imported, which is after this package).
# Without it a network camera that does not answer holds the lock for its whole timeoutSeconds at every
# attempt, and no other camera can open or reopen meanwhile, nor a looping file restart.
os.environ.setdefault("OPENCV_FFMPEG_IS_THREAD_SAFE", "1")
# OpenCV's own warnings go straight to stderr, the component log, at every open of a stream: two lines per
# reopen of a camera that is down (that the variable above removes OpenCV's locks, and that the FFmpeg
# backend "can't be used to capture by name"), past facecap's once-a-minute reminder. FFmpeg's error line
# with the cause ("Connection refused", "401 Unauthorized") is FFmpeg's own and stays. Set
# OPENCV_LOG_LEVEL=WARNING in the environment to see OpenCV's and GStreamer's warnings again.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
