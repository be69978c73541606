"""Who may read what: grants on servers, personal data and its masked copy, sealed raw data,
production's guard.
"""
