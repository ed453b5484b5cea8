"""``AblError``: the root of every exception this library raises on its own account.

``except AblError`` catches what we raise and nothing a provider, litellm or Python raises.
Where the reference library gave an error a built-in base, it keeps it too (a
``FrameworkTimeoutError`` is still a ``TimeoutError``). The tree::

    AblError
    ├── FrameworkTimeoutError (+ TimeoutError)   an attempt ran past timeout_per_item
    ├── TokenTrackingError                       a failed call that still used tokens
    │   └── StructuredOutputError                the model's output did not fit the schema
    ├── RateLimitRetriesExceeded                 an item's own rate-limit budget ran out
    ├── RateLimitTooLong                         Retry-After beyond max_cooldown_seconds
    ├── StrategyReturnError (+ TypeError)        execute returned the wrong shape
    ├── ProviderError                            the native transport's view of a provider
    │   ├── ProviderStatusError                  an HTTP error status
    │   ├── ProviderConnectionError
    │   ├── ProviderTimeoutError
    │   ├── MalformedResponseError
    │   └── MissingKeyError
    ├── BatchSubmitError (+ RuntimeError)        a provider batch could not be submitted
    └── StoreError                               the run store, as one line naming the file
        ├── StoreUnwritable                      writes refused for longer than allowed
        ├── LeaseHeld                            another process owns the run
        └── LeaseLost                            the run was taken over meanwhile
"""

from __future__ import annotations


class AblError(Exception):
    """Base of the exceptions ``async_batch_llm`` raises itself (see the module's tree)."""
