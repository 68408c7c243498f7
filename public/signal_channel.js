// Browser client for the inbox-asgi wire protocol (GET/POST /inbox with Basic auth).
//
//   const channel = new SignalingChannel({from: 'alice', to: 'bob', password: 's3cret'});
//   channel.addEventListener('offer', (e) => console.log(e.from, e.detail));
//   await channel.send({type: 'offer', sdp: '...'});
//   channel.disconnect();
//
// Each JSON message received is dispatched as an event named after its `type`
// field ('message' when it has none); `event.detail` is the message and
// `event.from` the sender's name. Problems are dispatched as 'error' events and
// never reload or tear down the page: a call that is already connected must not
// care whether the signaling server is still there.
//
// Requests carry the Authorization header themselves and use credentials: 'omit':
// with the default mode a 401 (WWW-Authenticate: Basic) would make the browser
// pop up its own login dialog instead of handing the response to us.
//
// `password` is a string, or a function returning one (or a promise of one):
// a server run with -auth-secret takes a token from the operator's backend as
// the password, and tokens expire. The function is called before the first
// request and again after a 401; the refused request is then retried once with
// the new value, and only a second 401 is reported. So a page that stays open
// for days renews its token whenever the server stops taking the old one:
//
//   password: () => fetch('/my-backend/inbox-token').then((r) => r.text()),
//
// A classic script (no module, no build step) so pages written for the Go
// server's `SignalingChannel` keep working.

class SignalingError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.name = 'SignalingError';
    this.status = status;
  }
}

class SignalingChannel extends EventTarget {
  constructor({
    server = '', from, to, password = '',
    retryFor = 30000, pollInterval = 1000, minBackoff = 250, maxBackoff = 5000,
    autoConnect = true,
  } = {}) {
    super();
    if (!from || from.includes(':')) throw new SignalingError('`from` must be a non-empty name without ":"');
    this.server = server.replace(/\/+$/, '');
    this.from = from;
    this.to = to;
    this.password = password;
    this.retryFor = retryFor;          // ms a send keeps retrying 404/503/network errors
    this.pollInterval = pollInterval;  // ms between polls when the server does not long-poll
    this.minBackoff = minBackoff;
    this.maxBackoff = maxBackoff;
    this.connected = false;
    this._abort = null;
    this._outbox = Promise.resolve();  // sends go out one at a time, so they arrive in order
    this._authorization = null;        // a promise of the Authorization header, made on first use
    if (autoConnect) this.connect();
  }

  /** Start long-polling our inbox (this also creates it on the server). */
  connect() {
    if (this.connected) return;
    this.connected = true;
    this._abort = new AbortController();
    this._poll(this._abort.signal);
  }

  /** Stop polling; the waiting request is aborted so the server lets go at once. */
  disconnect() {
    if (!this.connected) return;
    this.connected = false;
    this._abort.abort();
    this._abort = null;
  }

  /**
   * Post `data` (JSON-encoded) to `to`'s inbox.
   *
   * A missing inbox (404: the peer has not started yet), a full one (503, after
   * its Retry-After) and network errors are retried until `retryFor` ms have
   * passed; pass `{retry: false}` to give up at once on 404. Resolves when the
   * server accepted the message, rejects with a SignalingError otherwise.
   * Messages are posted one after the other, so a peer reads them in the order
   * they were sent (an offer before its ICE candidates).
   */
  send(data, {to = this.to, retry = true} = {}) {
    const sent = this._outbox.then(() => this._post(data, to, retry));
    this._outbox = sent.catch(() => {});
    return sent;
  }

  /**
   * The STUN/TURN servers the server hands this user (GET /ice-servers): a list
   * for RTCPeerConnection's `iceServers`, with short-lived TURN credentials.
   * Rejects with a SignalingError (e.g. status 404 from a server without the endpoint).
   */
  async iceServers() {
    let response;
    try {
      response = await this._fetch(`${this.server}/ice-servers`, {method: 'GET'});
    } catch (e) {
      throw e instanceof SignalingError ? e : new SignalingError(`network error: ${e.message}`);
    }
    if (!response.ok) throw new SignalingError(await reason(response), response.status);
    const body = await response.json().catch(() => null);
    if (!body || !Array.isArray(body.iceServers)) throw new SignalingError('ICE servers: not a list of servers');
    return body.iceServers;
  }

  /**
   * fetch() with our Authorization header. On a 401 a password function is asked
   * once more and the request repeated with its answer; a second 401 is returned.
   */
  async _fetch(url, init) {
    const send = (authorization) => fetch(url, {
      cache: 'no-store', credentials: 'omit', ...init, headers: {...init.headers, Authorization: authorization},
    });
    const authorization = await this._authorize();
    const response = await send(authorization);
    if (response.status !== 401 || typeof this.password !== 'function') return response;
    await response.body?.cancel();
    return send(await this._authorize(authorization));
  }

  /**
   * The Authorization header. `refused`: the header the server just refused; a
   * password function is then called again, unless another request renewed it meanwhile.
   */
  async _authorize(refused = null) {
    const current = this._authorization;
    if (current && refused !== null && typeof this.password === 'function') {
      // Several requests may be refused at once: the first one renews for all.
      if (await current.catch(() => null) === refused && this._authorization === current) this._authorization = null;
    }
    if (!this._authorization) {
      const made = this._makeAuthorization();
      this._authorization = made;
      made.catch(() => { if (this._authorization === made) this._authorization = null; });  // ask again next time
    }
    return this._authorization;
  }

  async _makeAuthorization() {
    let password = this.password;
    if (typeof password === 'function') {
      try {
        password = await password();
      } catch (e) {
        throw new SignalingError(`cannot get a password: ${e && e.message ? e.message : e}`);
      }
    }
    // btoa only takes Latin-1: encode the UTF-8 bytes so any name or password works.
    const bytes = new TextEncoder().encode(`${this.from}:${password ?? ''}`);
    return 'Basic ' + btoa(String.fromCharCode(...bytes));
  }

  async _post(data, to, retry) {
    if (!to) throw new SignalingError('no recipient: pass `to`');
    const deadline = Date.now() + this.retryFor;
    const body = JSON.stringify(data);
    let backoff = this.minBackoff;
    for (;;) {
      let wait = backoff;
      let error;
      let response = null;
      try {
        response = await this._fetch(`${this.server}/inbox?to=${encodeURIComponent(to)}`, {
          method: 'POST', body, headers: {'Content-Type': 'application/json'},
        });
      } catch (e) {
        error = e instanceof SignalingError ? e : new SignalingError(`network error: ${e.message}`);
      }
      if (response) {
        if (response.ok) return;
        error = new SignalingError(await reason(response), response.status);
        if (response.status === 503) wait = retryAfter(response, backoff);
        else if (response.status !== 404 || !retry) throw error;
      }
      if (Date.now() + wait > deadline) throw error;
      await sleep(wait);
      backoff = Math.min(backoff * 2, this.maxBackoff);
    }
  }

  async _poll(signal) {
    const url = `${this.server}/inbox`;
    let backoff = this.minBackoff;
    while (!signal.aborted) {
      const started = Date.now();
      let wait = 0;
      try {
        const response = await this._fetch(url, {method: 'GET', signal});
        if (response.status === 200) {
          const from = response.headers.get('X-From');
          this._dispatch(from, await response.text());
          backoff = this.minBackoff;
          continue;  // another message may be waiting: ask again at once
        }
        if (response.status === 204) {
          backoff = this.minBackoff;
          // A quick 204 means the server does not long-poll: do not spin.
          if (Date.now() - started < this.pollInterval) wait = this.pollInterval;
        } else {
          const error = new SignalingError(await reason(response), response.status);
          this._error(error);
          // Another password owns this name, or the token is bad (even a renewed one): retrying cannot help.
          if (response.status === 401) {
            this.disconnect();
            return;
          }
          wait = response.status === 503 ? retryAfter(response, backoff) : backoff;
          backoff = Math.min(backoff * 2, this.maxBackoff);
        }
      } catch (e) {
        if (signal.aborted) return;
        this._error(e instanceof SignalingError ? e : new SignalingError(`network error: ${e.message}`));
        wait = backoff;
        backoff = Math.min(backoff * 2, this.maxBackoff);
      }
      if (wait) await sleep(wait, signal);
    }
  }

  _dispatch(from, text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch (e) {
      message = text;  // not JSON: hand over the raw text
    }
    const type = message && typeof message === 'object' && typeof message.type === 'string' ? message.type : 'message';
    const event = new CustomEvent(type, {detail: message});
    event.from = from;
    this.dispatchEvent(event);
  }

  _error(error) {
    console.warn('signaling:', error.message);
    this.dispatchEvent(new CustomEvent('error', {detail: error}));
  }
}

async function reason(response) {
  const text = (await response.text().catch(() => '')).trim();
  return `HTTP ${response.status}${text ? ': ' + text : ''}`;
}

/** Milliseconds to wait per Retry-After (seconds or an HTTP date), else `fallback`. */
function retryAfter(response, fallback) {
  const value = response.headers.get('Retry-After');
  if (!value) return fallback;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? fallback : Math.max(0, date - Date.now());
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, {once: true});
  });
}
