"""Tests of the app as a whole: settings, start-up, the schema from migrations, the layering of packages."""
