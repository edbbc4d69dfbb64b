"""`icl-audio classify`: rank candidate labels for audio clips."""
