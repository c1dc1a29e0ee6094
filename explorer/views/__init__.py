"""The explorer's pages: `machines` (the list, one machine with its heatmap or a version
diff) and `executions` (lists, one execution, the actions operators take). Login
everywhere; viewers read, operators act (POST + CSRF). Views read through the selectors,
turn rows into what templates show through explorer.presenters, and act through the
service functions like every other surface.
"""
