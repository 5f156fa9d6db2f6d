"""What a holder sees and shows: wallet queries, usage history, show codes, card images (README.md)."""
