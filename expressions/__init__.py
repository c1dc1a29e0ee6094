"""Expressions: the checker that reads them at save time, the sandbox that runs them, and the
one check of the JSON values they (and every input) may hold. Django-free."""
