"""Answering a query without Prefect: search (text or image in, hits out; an image's own
metadata first), refine (a rough idea rewritten from its neighbours, offline or by an LLM), the
LLM client and CLIP's phrase and token rules. The CLI and the search page call these directly;
the flows reach them through the ``search`` and ``refine`` stage tasks.

Nothing here may import Prefect, even indirectly (a cold CLI search would pay about a second):
checked by ``make lint`` and by tests/query/test_search.py.
"""
