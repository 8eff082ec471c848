"""A customer's own billing, for its ``billing`` keys: plan, usage, spend and invoices under
``/v1/billing``. Everything is scoped to the calling key's customer; another customer's
invoice is answered exactly like one that does not exist (404, never 403)."""
