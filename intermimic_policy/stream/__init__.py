"""Live motion from generators: a client to publish windows, a runner for a user's generator
function (``intermimic stream``) and a reference generator for tests and the docs."""

from intermimic_policy.stream.client import WindowPublisher, window_message
from intermimic_policy.stream.runner import GeneratedWindow, RunOptions, load_generator, run

__all__ = ["GeneratedWindow", "RunOptions", "WindowPublisher", "load_generator", "run", "window_message"]
