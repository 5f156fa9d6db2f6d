"""City e-certificate platform backend."""
