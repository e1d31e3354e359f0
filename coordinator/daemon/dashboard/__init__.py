"""The live dashboard the coordinator serves: routes.py (pages, login, report, fleet),
auth.py (the token in a cookie, and the cross-site guard), fleet.py (the fleet
summarised and paged), static/ (the page, its style and its script; nothing from a CDN).
"""
