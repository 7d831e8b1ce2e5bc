"""The embedded default: the whole pipeline on one machine (`facecap demo`; the command is
facecap.commands.demo, the run is runner.DemoRunner)."""
