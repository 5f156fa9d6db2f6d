"""Sharing with departments: consent policy, access requests, grants, redemption, counter service, callbacks."""
