"""The browser console's views: thin views over the tenant-scoped selectors and services,
one module per area of console/urls.py; what they share is in ``common``."""
