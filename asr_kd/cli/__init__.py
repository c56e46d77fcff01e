"""The console scripts, one module each: parse the config, call the library. Imported by nothing.

``_command`` is their one shared piece: the ``@hydra_command`` wrapper that shows a user error as
one ``error:`` line with status 2 (``transcribe``, argparse, does the same by itself).
"""
