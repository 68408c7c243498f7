"""The mailbox domain: inboxes, messages and their rules, with no HTTP in sight.

`interface` is what the HTTP layer talks to; `memory` and `redis/` are the two
backends; `parking` is the one primitive a waiting reader parks on in both.
"""
