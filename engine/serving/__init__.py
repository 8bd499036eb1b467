"""Front ends over the engine: the command line, the OpenAI-compatible HTTP server and output formats."""
