"""The console scripts, one module each: parse the config, call the library. Imported by nothing."""
