"""Exact speed-ups of the pairwise forward: length grouping, padding-free packing, the shared prompt prefix
computed once, and the per-segment attention they run on. Each gives the padded path's rewards and
gradients (tests/test_packing.py); `--group_by_length false --padding_free false --share_prefix false`
turns them off.
"""
