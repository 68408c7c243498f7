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

class Peer extends EventTarget {
  constructor(channel, {iceServers = [], session = randomSession(), configuration = {}} = {}) {
    super();
    this.channel = channel;
    this.session = session;
    this.connection = new RTCPeerConnection({iceServers, ...configuration});
    this._pending = [];  // remote ICE candidates waiting for the remote description
    const pc = this.connection;
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
    await this.connection.setLocalDescription(await this.connection.createOffer());
    // Send localDescription: what createOffer returns has no toJSON in current Chromium.
    this._signal({...this.connection.localDescription.toJSON(), session: this.session});
  }

  /** Answer side: take the peer's offer and send our answer. */
  async answer(offer) {
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
  constructor(channel, {role, iceServers = [], setup = () => {}} = {}) {
    super();
    if (role !== 'offerer' && role !== 'answerer') throw new Error("role must be 'offerer' or 'answerer'");
    this.channel = channel;
    this.role = role;
    this.iceServers = iceServers;
    this.setup = setup;
    this.peer = null;
    channel.addEventListener('hello', () => this._onHello());
    channel.addEventListener('offer', (e) => this._onOffer(e.detail));
  }

  get status() {
    return this.peer ? this.peer.status : 'new';
  }

  /** Start signaling and tell the other side we are here. */
  start() {
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
    const peer = new Peer(this.channel, {iceServers: this.iceServers, session});
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
}

function randomSession() {
  return Math.random().toString(36).slice(2, 10);
}
