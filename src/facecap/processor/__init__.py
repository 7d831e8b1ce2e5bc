"""The cloud processor: subscribes to faces, stores each one, acknowledges only after it is stored."""
