"""Background work run by `flask jobs …` or in process: batch imports, callback delivery."""
