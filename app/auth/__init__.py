"""Authentication: principals, key look-up, the request dependency. A leaf package: it
imports no domain (only money, db/orm, errors)."""
