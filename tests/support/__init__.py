"""What only the tests need: sample faces, a collecting subscriber, the edge broker runner."""
