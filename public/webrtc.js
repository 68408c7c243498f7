// WebRTC on top of SignalingChannel (load signal_channel.js first).
//
// `Peer` wraps one RTCPeerConnection: offer/answer, trickle ICE (remote
// candidates are queued until the remote description is set, since
// addIceCandidate fails before it), and connection states as events.
//
// `Call` runs the small protocol the demo pages and examples/aiortc_peer.py
// speak, so either side may start first or reload:
//   {type: 'hello'}                                  "I am here"
//   {type: 'offer' | 'answer', sdp, session}
//   {type: 'icecandidate', candidate, session}       candidate null = end of candidates
// The offerer starts a fresh session (a new Peer) whenever it hears 'hello';
// the answerer says 'hello' when it starts and in reply to a 'hello', and
// answers every offer with a new Peer. Messages of an older session are ignored.
//
// ICE servers: `iceServers: [...]` as for RTCPeerConnection, or 'auto' to take
// them from the signaling server (GET /ice-servers, with the channel's
// credentials): its STUN servers and a TURN server with short-lived
// credentials. If that fails the peer goes on with none (fine on a LAN) and an
// 'error' event says why; nothing is torn down. `configuration` adds other
// RTCPeerConnection settings, e.g. {iceTransportPolicy: 'relay'} to use the
// TURN relay only.

class Peer extends EventTarget {
  /**
   * iceServers: a list, 'auto' (ask the channel's server), or a promise of a list.
   * The RTCPeerConnection exists at once (add tracks and data channels right
   * away); servers that come later are set before any candidate is gathered.
   */
  constructor(channel, {iceServers = [], session = randomSession(), configuration = {}} = {}) {
    super();
    this.channel = channel;
    this.session = session;
    const known = Array.isArray(iceServers);
    this.connection = new RTCPeerConnection({...configuration, iceServers: known ? iceServers : []});
    this._pending = [];  // remote ICE candidates waiting for the remote description
    const pc = this.connection;
    // connect() and answer() wait for this: gathering starts with setLocalDescription.
    this.ready = Promise.resolve();
    if (!known) this.ready = this._useIceServers(iceServers === 'auto' ? channel.iceServers() : iceServers);
    pc.addEventListener('icecandidate', (e) => this._signal({
      type: 'icecandidate', session: this.session, candidate: e.candidate ? e.candidate.toJSON() : null,
    }));
    pc.addEventListener('connectionstatechange', () => {
      const state = pc.connectionState;
      this.dispatchEvent(new CustomEvent('statechange', {detail: state}));
      this.dispatchEvent(new CustomEvent(state));
    });
    pc.addEventListener('track', (e) => this.dispatchEvent(new CustomEvent('track', {detail: e})));
    pc.addEventListener('datachannel', (e) => this.dispatchEvent(new CustomEvent('datachannel', {detail: e.channel})));
    this._onAnswer = (e) => this._mine(e) && this.acceptAnswer(e.detail);
    this._onCandidate = (e) => this._mine(e) && this.addRemoteCandidate(e.detail.candidate);
    channel.addEventListener('answer', this._onAnswer);
    channel.addEventListener('icecandidate', this._onCandidate);
  }

  get status() {
    return this.connection.connectionState;
  }

  addStream(stream) {
    stream.getTracks().forEach((track) => this.connection.addTrack(track, stream));
  }

  createDataChannel(label, options) {
    return this.connection.createDataChannel(label, options);
  }

  /** Offer side: send an offer to the channel's peer. */
  async connect() {
    await this.ready;
    await this.connection.setLocalDescription(await this.connection.createOffer());
    // Send localDescription: what createOffer returns has no toJSON in current Chromium.
    this._signal({...this.connection.localDescription.toJSON(), session: this.session});
  }

  /** Answer side: take the peer's offer and send our answer. */
  async answer(offer) {
    await this.ready;
    await this.connection.setRemoteDescription({type: 'offer', sdp: offer.sdp});
    await this._flushCandidates();
    await this.connection.setLocalDescription(await this.connection.createAnswer());
    this._signal({...this.connection.localDescription.toJSON(), session: this.session});
  }

  async acceptAnswer(answer) {
    if (this.connection.signalingState !== 'have-local-offer') return;  // a duplicate answer
    await this.connection.setRemoteDescription({type: 'answer', sdp: answer.sdp});
    await this._flushCandidates();
  }

  async addRemoteCandidate(candidate) {
    if (!this.connection.remoteDescription) {
      this._pending.push(candidate);
      return;
    }
    try {
      await this.connection.addIceCandidate(candidate || undefined);
    } catch (e) {
      console.warn('ignoring ICE candidate:', e.message);
    }
  }

  close() {
    this.channel.removeEventListener('answer', this._onAnswer);
    this.channel.removeEventListener('icecandidate', this._onCandidate);
    this.connection.close();
  }

  async _useIceServers(servers) {
    let iceServers;
    try {
      iceServers = await servers;
    } catch (error) {
      console.warn('no ICE servers from the signaling server, going on without:', error.message);
      const detail = new SignalingError(`ICE servers: ${error.message}`, error.status);
      this.dispatchEvent(new CustomEvent('error', {detail}));
      return;
    }
    if (this.connection.signalingState === 'closed') return;
    try {
      this.connection.setConfiguration({...this.connection.getConfiguration(), iceServers});
    } catch (error) {  // e.g. a malformed entry: carry on with none rather than not at all
      console.warn('unusable ICE servers:', error.message);
      this.dispatchEvent(new CustomEvent('error', {detail: error}));
    }
  }

  async _flushCandidates() {
    const pending = this._pending.splice(0);
    for (const candidate of pending) await this.addRemoteCandidate(candidate);
  }

  _mine(event) {
    const session = event.detail && event.detail.session;
    return session === undefined || session === this.session;
  }

  _signal(message) {
    this.channel.send(message).catch((error) => this.dispatchEvent(new CustomEvent('error', {detail: error})));
  }
}

class Call extends EventTarget {
  /**
   * role: 'offerer' or 'answerer'. setup(peer) runs for every new Peer, before
   * the offer or answer is made: add tracks or data channels there.
   * Signaling stops once connected (the server is not needed any more) and
   * starts again if the connection fails.
   */
  constructor(channel, {role, iceServers = [], configuration = {}, setup = () => {}} = {}) {
    super();
    if (role !== 'offerer' && role !== 'answerer') throw new Error("role must be 'offerer' or 'answerer'");
    this.channel = channel;
    this.role = role;
    this.iceServers = iceServers;  // a list, or 'auto': asked for at start() and shared by its peers
    this.configuration = configuration;
    this.setup = setup;
    this.peer = null;
    this._fetchedIceServers = null;
    channel.addEventListener('hello', () => this._onHello());
    channel.addEventListener('offer', (e) => this._onOffer(e.detail));
  }

  get status() {
    return this.peer ? this.peer.status : 'new';
  }

  /** Start signaling and tell the other side we are here. */
  start() {
    this._fetchedIceServers = null;  // fresh TURN credentials for each (re)start
    if (this.iceServers === 'auto') this._iceServers();
    this.channel.connect();
    this._hello();
  }

  hangup() {
    if (this.peer) this.peer.close();
    this.peer = null;
    this.channel.disconnect();
  }

  _hello() {
    // No retry on 404: if the other side is not there yet, it says hello when it comes.
    this.channel.send({type: 'hello'}, {retry: false}).catch(() => {});
  }

  _onHello() {
    if (this.role === 'answerer') this._hello();
    else this._newPeer(randomSession()).connect().catch((e) => this._error(e));
  }

  _onOffer(offer) {
    if (this.role !== 'answerer') return;
    this._newPeer(offer.session).answer(offer).catch((e) => this._error(e));
  }

  _newPeer(session) {
    if (this.peer) this.peer.close();
    const peer = new Peer(this.channel, {iceServers: this._iceServers(), configuration: this.configuration, session});
    this.peer = peer;
    peer.addEventListener('statechange', (e) => {
      if (peer !== this.peer) return;
      if (e.detail === 'connected') this.channel.disconnect();
      if (e.detail === 'failed') this.start();
      this.dispatchEvent(new CustomEvent('statechange', {detail: e.detail}));
    });
    peer.addEventListener('error', (e) => this._error(e.detail));
    this.setup(peer);
    this.dispatchEvent(new CustomEvent('peer', {detail: peer}));
    return peer;
  }

  _error(error) {
    this.dispatchEvent(new CustomEvent('error', {detail: error}));
  }

  /** The list, or for 'auto' a promise of the server's list (asked again if the last try failed). */
  _iceServers() {
    if (this.iceServers !== 'auto') return this.iceServers;
    if (!this._fetchedIceServers) {
      const fetched = this.channel.iceServers();
      this._fetchedIceServers = fetched;
      fetched.catch(() => { if (this._fetchedIceServers === fetched) this._fetchedIceServers = null; });
    }
    return this._fetchedIceServers;
  }
}

function randomSession() {
  return Math.random().toString(36).slice(2, 10);
}
