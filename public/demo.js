// Helpers shared by the demo pages: names from the URL, a per-tab password,
// and showing what the call is doing. Load after signal_channel.js and webrtc.js.
//
// URL parameters every page takes:
//   server=https://other:3000  signal through another inbox-asgi (it needs --cors)
//   password=…                 the inbox password. On a server run with -auth-secret
//                              this is where the access token from the operator's
//                              backend goes: the token *is* the password on the wire,
//                              so there is no separate `token=` parameter.
//   relay=1                    TURN relay only (iceTransportPolicy 'relay'), e.g. to
//                              check a TURN server: no direct or STUN-found path is tried
//   transport=long-polling     how the page reads its inbox: 'auto' (the default: the
//                              WebSocket at /inbox/ws, else long polling), 'websocket' or
//                              'long-polling'. #transport shows the one in use.
// ICE servers (STUN, and TURN with fresh credentials) come from the server's
// /ice-servers; a server without any configured hands out none, fine on a LAN.

const demoParams = new URLSearchParams(location.search);

function demoParam(name, fallback) {
  return demoParams.get(name) || fallback;
}

/**
 * The inbox password: `?password=` if given, else a random one kept for this tab,
 * so a reload still opens the same inbox (another password would get 401).
 */
function demoPassword(name) {
  const given = demoParams.get('password');
  if (given !== null) return given;
  const key = `inbox-asgi password ${name}`;
  let password = sessionStorage.getItem(key);
  if (!password) {
    const bytes = crypto.getRandomValues(new Uint8Array(12));
    password = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    sessionStorage.setItem(key, password);
  }
  return password;
}

/**
 * A SignalingChannel for this page, not yet polling. `?server=` points it at an
 * inbox-asgi on another origin (which must then run with --cors).
 */
function demoChannel(from, to) {
  return new SignalingChannel({
    server: demoParam('server', ''), from, to, password: demoPassword(from), autoConnect: false,
    transport: demoParam('transport', 'auto'),
  });
}

/** Options for `new Call` shared by the pages: ICE servers from the server, `?relay=1`. */
function demoCallOptions(options) {
  const configuration = demoParams.get('relay') === '1' ? {iceTransportPolicy: 'relay'} : {};
  return {iceServers: 'auto', configuration, ...options};
}

/** A link to this demo's other page, with the names swapped (and the same ?server=, ?relay=, ?transport=). */
function demoPeerLink(page, params) {
  const url = new URL(page, location.href);
  for (const key of ['server', 'relay', 'transport']) if (demoParams.has(key)) url.searchParams.set(key, demoParams.get(key));
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
  return url.href;
}

/** Mirror the call's connection state, errors and the channel's transport into #state, #error and #transport. */
function demoShowState(call, channel) {
  const state = document.getElementById('state');
  const error = document.getElementById('error');
  const transport = document.getElementById('transport');
  const show = (text) => { state.textContent = text; state.dataset.state = text; };
  const showTransport = () => {
    if (!transport) return;
    transport.textContent = channel.transport || 'not yet decided';
    transport.dataset.transport = channel.transport || '';
  };
  channel.addEventListener('transport', showTransport);
  showTransport();
  call.addEventListener('statechange', (e) => {
    show(e.detail);
    if (e.detail === 'connected') error.textContent = '';
  });
  const report = (e) => {
    const detail = e.detail;
    error.textContent = detail.status === 401
      ? 'The server refused this name: it is taken (by another password; choose other names in the URL), '
        + 'or, on a server that wants access tokens, the token in ?password= is wrong or has expired.'
      : String(detail.message || detail);
  };
  channel.addEventListener('error', report);
  call.addEventListener('error', report);
  show(call.status === 'new' ? 'waiting for the other side' : call.status);
}
