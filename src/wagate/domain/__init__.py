"""Pure logic: request and response types, the error catalogue, recipients. No I/O, no clock."""
