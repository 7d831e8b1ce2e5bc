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
