"""FaceLogger: one log line per face message on the local broker, and a periodic summary."""
