"""The delivery loop: an asyncio task of the app that sends due webhook deliveries, signed per
the Standard Webhooks specification with the `standardwebhooks` library, and retries a failed
attempt with doubling delays until its attempts run out.

Each attempt checks the URL again (what its host resolves to may have changed since the job was
submitted) and connects to an address it checked, keeping the host name for the Host header
and the TLS certificate check. Redirects are not followed and no proxy from the environment is
used: either would send the request somewhere unchecked. The answer's body is never read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import datetime, timezone

import httpx
from standardwebhooks.webhooks import Webhook

from acestep_api.wakeup import set_from_any_thread
from acestep_api import __version__
from acestep_api.settings import Settings
from acestep_api.webhooks.deliveries import Delivery, DeliveryState, DeliveryStore
from acestep_api.webhooks.targets import IPAddress, RefusedTarget, Resolver, Target, check_target, system_resolver

log = logging.getLogger(__name__)

USER_AGENT = f"acestep-api/{__version__} (webhooks)"
CONCURRENCY = 8  # attempts in flight at once: one slow receiver does not hold the others up
IDLE_SECONDS = 60.0  # the loop looks at the store at least this often
LEASE_MARGIN = 30.0  # seconds past an attempt's timeout before a claimed delivery is due again
PURGE_INTERVAL = 3600.0  # how often deliveries of jobs the retention removed are dropped
STOP_GRACE = 2.0  # seconds a stop lets attempts in flight finish
INTERRUPTED = "Interrupted by a server stop; sent again after the restart"


def build_sender(settings: Settings, store: DeliveryStore,
                 own: Iterable[tuple[IPAddress, int]] = ()) -> WebhookSender | None:
    """The delivery loop of a process; None without a secret (nothing is sent unsigned: stored
    deliveries wait for a process with a secret, and requests naming a webhook are refused)."""
    if settings.webhook_secret is None:
        try:
            pending = store.next_due_at() is not None
        except Exception:  # noqa: BLE001 - only a warning hangs on it (a database still starting)
            pending = False
        if pending:
            log.warning("Webhook deliveries are pending but ACESTEP_WEBHOOK_SECRET is unset: "
                        "this process does not send them")
        return None
    return WebhookSender(store, settings.webhook_secret.get_secret_value(), timeout=settings.webhook_timeout,
                        max_attempts=settings.webhook_max_attempts, retry_seconds=settings.webhook_retry_seconds,
                        allow_private=settings.webhook_allow_private, own=own)


def retry_delay(attempts: int, first_delay: float) -> float:
    """Seconds before the next attempt after `attempts` failed ones: first_delay, doubled each time."""
    return first_delay * 2 ** (attempts - 1)


def sign_headers(signer: Webhook, message_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers for `body` sent at `at`."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signer.sign(message_id, at, body),
    }


class WebhookSender:
    def __init__(
        self,
        store: DeliveryStore,
        secret: str,
        *,
        timeout: float = 10.0,
        max_attempts: int = 8,
        retry_seconds: float = 10.0,
        allow_private: bool = False,
        own: Iterable[tuple[IPAddress, int]] = (),
        resolve: Resolver = system_resolver,
    ):
        self.store = store
        self.signer = Webhook(secret)
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.retry_seconds = retry_seconds
        self.allow_private = allow_private
        self.own = frozenset(own)
        self.resolve = resolve
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._attempts: set[asyncio.Task] = set()
        self._client: httpx.AsyncClient | None = None
        self._stopping = False

    # --- running -----------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False, trust_env=False)
        self._task = asyncio.create_task(self._run(), name="webhook-deliveries")

    def wake(self) -> None:
        """A delivery became due; callable from any thread (the worker's ends jobs)."""
        set_from_any_thread(self._loop, self._wakeup)

    async def stop(self) -> None:
        """Stop sending. Attempts in flight get STOP_GRACE seconds to finish; one still running
        then is dropped and its delivery is due again at once (at the next start): whether the
        receiver got it is unknown, so it may arrive twice, as Standard Webhooks allows."""
        # A flag, not only a cancel: on Python 3.11 asyncio.wait_for can swallow a cancel that
        # arrives as its wait ends, and the loop would then never stop.
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.set()
        running = {task for task in (self._task, *self._attempts) if task is not None}
        if running:
            _, running = await asyncio.wait(running, timeout=STOP_GRACE)
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=STOP_GRACE)
        if self._client is not None:
            await self._client.aclose()
        self._task, self._loop, self._wakeup = None, None, None

    async def _run(self) -> None:
        next_purge = 0.0
        while not self._stopping:
            self._wakeup.clear()  # before looking, so a wake-up during the look is not lost
            try:
                now = time.time()
                if now >= next_purge:
                    removed = self.store.purge_orphans()
                    if removed:
                        log.info("Removed %d webhook deliveries of removed jobs", removed)
                    next_purge = now + PURGE_INTERVAL
                self._claim(now)
                delay = self._idle_delay()
            except Exception:  # noqa: BLE001 - a store fault must not end the loop for good
                log.exception("The webhook delivery loop failed; it tries again")
                delay = IDLE_SECONDS
            try:
                await asyncio.wait_for(self._wakeup.wait(), delay)
            except asyncio.TimeoutError:
                pass

    def _claim(self, now: float) -> None:
        free = CONCURRENCY - len(self._attempts)
        if free <= 0 or self._stopping:
            return
        for delivery in self.store.claim_due(now, now + self.timeout + LEASE_MARGIN, free):
            task = asyncio.create_task(self._attempt(delivery))
            self._attempts.add(task)
            task.add_done_callback(self._attempt_done)

    def _attempt_done(self, task: asyncio.Task) -> None:
        self._attempts.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("A webhook attempt failed unexpectedly", exc_info=task.exception())
        if self._wakeup is not None:
            self._wakeup.set()  # a slot is free, and the next due time may have changed

    def _idle_delay(self) -> float:
        if len(self._attempts) >= CONCURRENCY:
            return IDLE_SECONDS  # an attempt ending wakes the loop
        due = self.store.next_due_at()
        if due is None:
            return IDLE_SECONDS
        return min(max(0.0, due - time.time()), IDLE_SECONDS)

    # --- one attempt -------------------------------------------------------------------

    async def _attempt(self, delivery: Delivery) -> None:
        delivery.attempts += 1
        try:
            await self._make_attempt(delivery)
        except asyncio.CancelledError:
            self._settle(delivery, DeliveryState.PENDING, None, INTERRUPTED, next_attempt_at=time.time())
            raise
        except Exception:  # noqa: BLE001 - counted as a failed attempt, so retries stay bounded
            log.exception("Webhook attempt of job %s failed inside the server", delivery.job_id)
            self._failed_attempt(delivery, None, "The attempt failed inside the server")

    async def _make_attempt(self, delivery: Delivery) -> None:
        try:
            target = await asyncio.to_thread(check_target, delivery.url, allow_private=self.allow_private,
                                             own=self.own, resolve=self.resolve)
        except RefusedTarget as refused:
            # Checked when the job was submitted; refused now, the host moved somewhere it may not go.
            self._settle(delivery, DeliveryState.FAILED, None, f"Not sent: the URL {refused}")
            log.warning("Webhook of job %s refused at send time: %s", delivery.job_id, refused)
            return
        status, problem = await self._post(target, delivery)
        if status is not None and 200 <= status < 300:
            self._settle(delivery, DeliveryState.DELIVERED, status, None)
            return
        if problem is None:
            redirect = " (redirects are not followed)" if 300 <= status < 400 else ""
            problem = f"The receiver answered HTTP {status}{redirect}"
        self._failed_attempt(delivery, status, problem)

    def _failed_attempt(self, delivery: Delivery, status: int | None, problem: str) -> None:
        """Another attempt after the doubled delay, or `failed` once the attempts are used up."""
        if delivery.attempts >= self.max_attempts:
            self._settle(delivery, DeliveryState.FAILED, status,
                         f"{problem}; gave up after {delivery.attempts} attempts")
        else:
            delay = retry_delay(delivery.attempts, self.retry_seconds)
            self._settle(delivery, DeliveryState.PENDING, status, problem, next_attempt_at=time.time() + delay)
        log.info("Webhook of job %s, attempt %d: %s", delivery.job_id, delivery.attempts, problem)

    async def _post(self, target: Target, delivery: Delivery) -> tuple[int | None, str | None]:
        """The HTTP status of the attempt, or None and what went wrong."""
        body = (delivery.payload or "").encode("utf-8")
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "host": target.host_header,
            **sign_headers(self.signer, delivery.job_id, body, datetime.now(timezone.utc)),
        }
        # The connection goes to the checked address; TLS still checks the certificate for the host name.
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            async with self._client.stream("POST", target.pinned_url(), content=body, headers=headers,
                                           extensions=extensions) as response:
                return response.status_code, None
        except httpx.TimeoutException:
            return None, f"The receiver did not answer within {self.timeout:g} seconds"
        except httpx.HTTPError:
            return None, "Could not connect to the receiver"

    def _settle(self, delivery: Delivery, state: DeliveryState, status: int | None, error: str | None,
                next_attempt_at: float | None = None) -> None:
        delivery.state = state
        delivery.last_status = status
        delivery.last_error = error
        delivery.next_attempt_at = next_attempt_at
        if state is DeliveryState.DELIVERED:
            delivery.delivered_at = time.time()
        self.store.record_attempt(delivery)
