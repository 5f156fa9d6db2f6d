"""What a holder sees and shows: wallet queries, show codes, card images."""
