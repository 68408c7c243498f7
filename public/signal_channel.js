// Browser client for the inbox-asgi wire protocol: a WebSocket at /inbox/ws, or
// long polling (GET/POST /inbox with Basic auth).
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
// Transports (`transport` option): 'auto' (the default) reads the inbox over the
// WebSocket at /inbox/ws and falls back to long polling, for good, when the
// socket cannot get as far as `ready` (a server without the endpoint, a proxy
// that does not pass upgrades, a server whose backend has no socket support, a
// connection that fails); 'websocket' and 'long-polling' force one. A browser
// allows six HTTP/1.1 connections per origin and a long poll holds one: the
// seventh long-polling tab of a browser stalls, while sockets do not count.
// Over the socket each message is acknowledged after its listeners ran (one ack
// per burst), repeats after a reconnect are dropped by id, and a lost socket is
// opened again with backoff. `channel.transport` says which one is in use
// ('websocket', 'long-polling', or null until decided), and a 'transport'
// event is dispatched when it is decided. `send()` goes over the socket when it
// is ready, else it POSTs; either way it resolves once the server took the message.
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
    autoConnect = true, transport = 'auto', readyTimeout = 8000, ackDelay = 10,
  } = {}) {
    super();
    if (!from || from.includes(':')) throw new SignalingError('`from` must be a non-empty name without ":"');
    if (!TRANSPORTS.includes(transport)) throw new SignalingError(`\`transport\` must be one of ${TRANSPORTS.join(', ')}`);
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
    this.requestedTransport = transport;
    this.transport = null;             // 'websocket' | 'long-polling' once decided
    this.readyTimeout = readyTimeout;  // ms a socket may take to say `ready` before 'auto' gives up on it
    this.ackDelay = ackDelay;          // ms to gather a burst of messages under one ack
    this._session = null;              // the socket that is ready, if any
    this._opening = null;              // while a socket is opening: a promise settled at `ready` or close
    this._generation = null;           // the inbox generation of the ids in _seen
    this._seen = new Set();            // ids of messages dispatched (socket only), oldest first
    this._ref = 0;
    if (autoConnect) this.connect();
  }

  /** Start reading our inbox, over the socket or by long polling (this also creates it on the server). */
  connect() {
    if (this.connected) return;
    this.connected = true;
    this._abort = new AbortController();
    const signal = this._abort.signal;
    if (this.requestedTransport === 'long-polling' || this.transport === 'long-polling') {
      this._decide('long-polling');
      this._poll(signal);
    } else {
      if (this.requestedTransport === 'websocket') this._decide('websocket');
      this._listen(signal);
    }
  }

  /** Stop reading; a waiting request is aborted and the socket closed, so the server lets go at once. */
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
      // A socket on its way: wait for it, so a send right after connect() finds our inbox made.
      if (!this._session && this._opening) await this._opening;
      const session = this._session;
      if (session) {
        try {
          await this._socketSend(session, body, to);
          return;
        } catch (e) {
          error = e;  // status 0: the socket went away first; try again (by POST if it is not back)
          if (e.status === 503) wait = e.retryAfter ?? backoff;
          else if (e.status !== 0 && (e.status !== 404 || !retry)) throw error;
        }
      } else {
        try {
          response = await this._fetch(`${this.server}/inbox?to=${encodeURIComponent(to)}`, {
            method: 'POST', body, headers: {'Content-Type': 'application/json'},
          });
        } catch (e) {
          error = e instanceof SignalingError ? e : new SignalingError(`network error: ${e.message}`);
        }
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

  /**
   * Read the inbox over /inbox/ws until disconnected: one socket after another,
   * with backoff after a lost one. In 'auto' mode a socket that never gets as far
   * as `ready` hands over to long polling for good.
   */
  async _listen(signal) {
    let backoff = this.minBackoff;
    let renewed = false;
    while (!signal.aborted) {
      const ended = await this._openSocket(signal);
      if (signal.aborted) return;
      if (ended.ready) {
        backoff = this.minBackoff;
        renewed = false;
      }
      const {code} = ended;
      if (code === 4401) {
        // Like a 401: a password function gets one chance to renew, then it is reported and we stop.
        if (!renewed && typeof this.password === 'function') {
          renewed = true;
          await this._authorize(ended.authorization).catch(() => {});
          continue;
        }
        this._error(new SignalingError(closeReason(ended, 'credentials refused'), 401));
        this.disconnect();
        return;
      }
      if (code === 4409) {
        // A newer reader (another tab with this name, or a long poll) took over the inbox:
        // fighting it for the inbox would only bounce messages between the two.
        this._error(new SignalingError(closeReason(ended, 'another reader took over this inbox'), 409));
        this.disconnect();
        return;
      }
      const refusal = code === 4429 || code === 4503 || code === 4408;  // answers a long poll would get too
      if (this.requestedTransport === 'auto' && !ended.error && !refusal
          && (code === 1011 || (!ended.ready && this.transport !== 'websocket'))) {
        console.info('signaling: no WebSocket here (close code %s), long polling instead', code);
        this._decide('long-polling');
        this._poll(signal);
        return;
      }
      if (code === 1011 && this.requestedTransport === 'websocket') {
        this._error(new SignalingError(closeReason(ended, 'the server has no WebSocket support'), 501));
        this.disconnect();
        return;
      }
      this._error(ended.error || new SignalingError(closeReason(ended, 'connection lost'), closeStatus(code)));
      await sleep(backoff, signal);
      backoff = Math.min(backoff * 2, this.maxBackoff);
    }
  }

  /** One socket, from opening to close: resolves with {ready, code, reason, authorization} or {error}. */
  async _openSocket(signal) {
    let opened;
    const opening = new Promise((resolve) => { opened = resolve; });
    this._opening = opening;  // set at once: a send() made right after connect() waits for this socket
    const settle = () => {
      opened();
      if (this._opening === opening) this._opening = null;
    };
    try {
      return await this._runSocket(signal, settle);
    } finally {
      settle();
    }
  }

  async _runSocket(signal, settle) {
    let authorization;
    try {
      authorization = await this._authorize();
    } catch (error) {
      return {error};
    }
    if (signal.aborted) return {};
    return new Promise((resolve) => {
      let socket;
      try {
        socket = new WebSocket(this._socketUrl());
      } catch (e) {
        resolve({error: new SignalingError(`cannot open a WebSocket: ${e.message}`)});
        return;
      }
      const session = {
        socket, settle, ready: false, closing: false, pending: new Map(), received: 0, acked: 0, ackTimer: null,
      };
      // A proxy may take the upgrade and then sit on it: do not wait for `ready` forever.
      const timer = setTimeout(() => { if (!session.ready) socket.close(); }, this.readyTimeout);
      const onAbort = () => this._closeSession(session);
      signal.addEventListener('abort', onAbort, {once: true});
      socket.addEventListener('open', () => {
        socket.send(JSON.stringify({type: 'auth', username: this.from, password: passwordOf(authorization)}));
      });
      socket.addEventListener('message', (e) => this._onFrame(session, signal, e.data));
      socket.addEventListener('close', (e) => {
        clearTimeout(timer);
        clearTimeout(session.ackTimer);
        signal.removeEventListener('abort', onAbort);
        if (this._session === session) this._session = null;
        for (const {reject} of session.pending.values()) reject(new SignalingError('the WebSocket closed', 0));
        session.pending.clear();
        resolve({ready: session.ready, code: e.code, reason: e.reason, authorization});
      });
    });
  }

  _onFrame(session, signal, data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch (e) {
      return;
    }
    if (frame.type === 'ready') {
      if (signal.aborted) return;
      session.ready = true;
      if (frame.inbox !== this._generation) {  // the inbox was made anew: its ids start over
        this._generation = frame.inbox;
        this._seen.clear();
      }
      this._session = session;
      session.settle();
      this._decide('websocket');
    } else if (frame.type === 'message') {
      // After disconnect() nothing is dispatched or acknowledged: the server keeps it for the next reader.
      if (!session.ready || signal.aborted || !Number.isInteger(frame.id)) return;
      if (!this._seen.has(frame.id)) {  // else a repeat: delivered again because its ack did not arrive
        this._seen.add(frame.id);
        if (this._seen.size > SEEN_IDS) this._seen.delete(this._seen.values().next().value);
        this._dispatch(frame.from, messageText(frame));
      }
      session.received = Math.max(session.received, frame.id);
      if (session.ackTimer === null) session.ackTimer = setTimeout(() => this._ack(session), this.ackDelay);
    } else if (frame.type === 'sent' || frame.type === 'error') {
      const pending = session.pending.get(frame.ref);
      if (!pending) return;
      session.pending.delete(frame.ref);
      if (frame.type === 'sent') pending.resolve();
      else {
        const error = new SignalingError(`${frame.status}: ${frame.reason}`, frame.status);
        error.retryAfter = Number.isFinite(frame.retry_after) ? frame.retry_after * 1000 : null;
        pending.reject(error);
      }
      if (session.closing && session.pending.size === 0) session.socket.close(1000);
    }
  }

  /** Acknowledge everything received so far on this socket, in one frame. */
  _ack(session) {
    clearTimeout(session.ackTimer);
    session.ackTimer = null;
    if (session.received > session.acked && session.socket.readyState === WebSocket.OPEN) {
      session.socket.send(JSON.stringify({type: 'ack', id: session.received}));
      session.acked = session.received;
    }
  }

  /** disconnect(): acknowledge what was handled, let sends in flight get their answer, then close. */
  _closeSession(session) {
    if (this._session === session) this._session = null;
    this._ack(session);
    session.closing = true;
    if (session.pending.size === 0) session.socket.close(1000);
    else setTimeout(() => session.socket.close(1000), this.readyTimeout);
  }

  _socketSend(session, body, to) {
    const ref = ++this._ref;
    return new Promise((resolve, reject) => {
      session.pending.set(ref, {resolve, reject});
      session.socket.send(JSON.stringify({type: 'send', ref, to, body, content_type: 'application/json'}));
    });
  }

  _socketUrl() {
    const url = new URL(`${this.server}/inbox/ws`, location.href);
    if (url.protocol === 'https:') url.protocol = 'wss:';
    else if (url.protocol === 'http:') url.protocol = 'ws:';
    return url.href;
  }

  _decide(transport) {
    if (this.transport === transport) return;
    this.transport = transport;
    this.dispatchEvent(new CustomEvent('transport', {detail: transport}));
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

const TRANSPORTS = ['auto', 'websocket', 'long-polling'];
const SEEN_IDS = 4096;  // ids remembered for dropping repeats (a repeat is at most a window behind)

/** The password inside a Basic Authorization header (the auth frame carries it apart from the name). */
function passwordOf(authorization) {
  const bytes = Uint8Array.from(atob(authorization.slice('Basic '.length)), (c) => c.charCodeAt(0));
  const text = new TextDecoder().decode(bytes);
  return text.slice(text.indexOf(':') + 1);
}

/** A message frame's body as text, as a long poll's response.text() would give it. */
function messageText(frame) {
  if (typeof frame.body_base64 === 'string') {
    return new TextDecoder().decode(Uint8Array.from(atob(frame.body_base64), (c) => c.charCodeAt(0)));
  }
  return typeof frame.body === 'string' ? frame.body : '';
}

/** The HTTP status a close code stands for (4503 → 503), else 0 (a network error). */
function closeStatus(code) {
  return code >= 4000 && code < 5000 ? code - 4000 : 0;
}

function closeReason(ended, fallback) {
  return `WebSocket closed (${ended.code})${ended.reason ? ': ' + ended.reason : ''}` + (ended.reason ? '' : `: ${fallback}`);
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
