"""Telling customers: webhook POSTs to their URLs, only to addresses the policy allows."""
