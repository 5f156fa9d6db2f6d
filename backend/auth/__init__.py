"""Route decorators: who is calling (department clients, citizens, staff) and with which scopes."""
