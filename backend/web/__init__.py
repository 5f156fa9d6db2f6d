"""Server-rendered pages and public endpoints; helpers shared by every face."""
