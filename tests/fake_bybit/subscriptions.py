"""Decides whether a subscribe or unsubscribe request is accepted, and with which text it is refused.

Pure: no I/O. A request is accepted or refused as a whole: a refused multi-topic request subscribes none
of its topics (PROTOCOL.md §5.3 reports this for linear; UNCONFIRMED elsewhere). The first problem found
names the topic in the text, as Bybit's one-topic texts do.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from tests.fake_bybit import topics
from tests.fake_bybit.topics import Endpoint


def topic_args(args: Any) -> list[str] | None:
    """`args` when it is a list of strings, else None."""
    if isinstance(args, list) and all(isinstance(arg, str) for arg in args):
        return args
    return None


def refuse_subscribe(
    endpoint: Endpoint,
    args: list[str],
    *,
    subscribed: Collection[str],
    authenticated: bool,
    rejections: Mapping[str, str],
    max_args_chars: int | None = topics.PUBLIC_MAX_ARGS_CHARS,
    max_option_topics: int | None = topics.OPTION_MAX_TOPICS,
) -> str | None:
    """The `ret_msg` refusing this subscribe, or None to accept every topic in it.

    `max_args_chars` caps the characters of all topics on a public connection and `max_option_topics`
    the topics on an option connection (§5.2); None lifts a cap.
    """
    if endpoint == "spot" and len(args) > topics.SPOT_MAX_ARGS_PER_REQUEST:
        return topics.ARGS_SIZE_SPOT
    for topic in args:
        if topic in rejections:
            return rejections[topic]  # a test forced it, e.g. to play an unknown symbol
        if endpoint == "private":
            if not topics.is_private_topic(topic):
                return topics.handler_not_found(topic)
        elif topics.parse_public_topic(endpoint, topic) is None:
            return topics.handler_not_found(topic)
    if endpoint == "private":
        if not authenticated:
            return topics.NOT_AUTHORIZED
        for topic in args:
            all_in_one = topics.all_in_one_of(topic)
            if all_in_one is not None and all_in_one in args:
                # §9: `order` and `order.linear` cannot share a request (reply text UNCONFIRMED).
                return topics.all_in_one_conflict(topic)
    seen: set[str] = set()
    for topic in args:
        # A topic twice in one request is treated like one already live (UNCONFIRMED, §5.3).
        if topic in subscribed or topic in seen:
            return topics.already_subscribed(topic)
        seen.add(topic)
    if endpoint != "private" and max_args_chars is not None:
        total_chars = sum(len(topic) for topic in subscribed) + sum(len(topic) for topic in args)
        if total_chars > max_args_chars:
            return topics.ARGS_CHARS_EXCEEDED
    option_full = max_option_topics is not None and len(subscribed) + len(args) > max_option_topics
    if endpoint == "option" and option_full:
        return topics.OPTION_TOPICS_EXCEEDED
    return None


def refuse_unsubscribe(endpoint: Endpoint, args: list[str]) -> str | None:
    """Unsubscribing a topic that is not subscribed succeeds (UNCONFIRMED, §5.3: clients accept both).
    Spot's 10-arg cap is applied to unsubscribe too ("probably", §5.2)."""
    if endpoint == "spot" and len(args) > topics.SPOT_MAX_ARGS_PER_REQUEST:
        return topics.ARGS_SIZE_SPOT
    return None
