"""Releases: the plan of a change, building beside production, the swap, the state, the lock,
rollback.
"""
