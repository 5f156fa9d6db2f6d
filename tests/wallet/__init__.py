"""Tests of backend/wallet: the citizen's wallet, card images, show codes and their retention."""
