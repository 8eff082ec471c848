"""The web console (``/console``): server-rendered pages for the operator's staff (admin,
finance) and for customers, on the same services and authorization as the API."""
