"""facecap: edge-to-cloud face capture for AWS IoT Greengrass v2."""

__version__ = "0.1.0"
