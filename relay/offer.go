package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// The seed's handshake with each receiver: the control connection, the
// signed offer and its answer, at the start of a session and for each
// receiver that comes later or comes back.

// connectAll opens a control connection to every peer and makes the
// offer; peers that cannot be reached or refuse are failed with the reason.
// It returns once every handshake is over, or once no peer has accepted
// for startQuiet after one did: a peer still at it then (a host that takes the
// connection and says nothing, a receiver sizing a large spool) joins the
// running session when its handshake ends, as a late receiver does, and
// holds no other back.
func (s *seedRun) connectAll(ctx context.Context) {
	peers := s.opt.Peers
	if s.cfg.MaxNodes > 0 && len(peers) > s.cfg.MaxNodes {
		s.opt.Log.Warn("more receivers than one session takes: the rest are not taken", "found", len(peers), "max_nodes", s.cfg.MaxNodes)
		s.refused = peers[s.cfg.MaxNodes:]
		peers = peers[:s.cfg.MaxNodes]
	}
	s.nodes = make([]*node, len(peers))
	dials := make(chan event, len(peers)) // never blocks a connect
	for i, p := range peers {
		n := &node{id: s.t.add(), peer: p, connecting: true}
		s.nodes[i] = n
		s.index(n)
		s.pending++
		s.readers.Add(1)
		go func() {
			defer s.readers.Done()
			d, err := s.connect(ctx, p)
			dials <- event{n: n, err: err, connected: true, dial: d}
		}()
	}
	quiet := time.NewTimer(time.Hour)
	defer quiet.Stop()
wait:
	for s.pending > 0 {
		select {
		case ev := <-dials:
			s.pending--
			s.admit(ctx, ev.n, ev.dial, ev.err)
			if ev.err == nil {
				quiet.Reset(startQuiet) // one more to plan: a failure is not
			}
		case <-quiet.C:
			s.opt.Log.Info("receivers still answering join the running session when they do", "receivers", s.pending)
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	if s.pending == 0 {
		return
	}
	late := s.pending
	s.readers.Add(1)
	go func() {
		defer s.readers.Done()
		for range late {
			ev := <-dials
			select {
			case s.events <- ev:
			case <-ctx.Done():
				if ev.dial != nil {
					ev.dial.c.conn.Close()
				}
			}
		}
	}()
}

// startQuiet is how long the first plan waits for one more receiver to
// answer: on a LAN the answers come within milliseconds of each other
// (128 at once on 2 loaded cores: within 86 ms, never 4 ms apart), while
// a handshake that stalls lasts the dial timeout, DeadAfter, or 30 s more
// for an accept. A receiver that answers later still takes part.
const startQuiet = 500 * time.Millisecond

// overCap reports whether the session has all the nodes it takes.
func (s *seedRun) overCap() bool { return s.cfg.MaxNodes > 0 && len(s.nodes) >= s.cfg.MaxNodes }

// connect opens a control connection to p and makes the offer.
func (s *seedRun) connect(ctx context.Context, p Peer) (*dialed, error) {
	conn, err := controlDialer(s.cfg).DialContext(ctx, "tcp", p.Addr.String())
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	// A session that ends, or is stopped, waits for no handshake.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c := newCtrl(conn, s.cfg.DeadAfter)
	// Every byte renews a step's deadline: the whole handshake has one
	// too, so a host that dribbles its answer holds no session's end.
	c.conn.until = time.Now().Add(handshakeLimit(s.cfg, len(s.offer)))
	fail := func(err error) (*dialed, error) {
		conn.Close()
		return nil, err
	}
	h := newHello(roleControl, NodeID{}, "", s.keys.secret)
	// Without a fleet secret the offer goes with the hello: the receiver
	// proves nothing first, and the seed's turn between its welcome and
	// the offer (128 handshakes at once on 2 loaded cores: 13 ms at the
	// median, 46 at the 90th percentile) holds up no session's start.
	hello := []frame{{typ: msgHello, payload: h.encode()}}
	offered := time.Now()
	if s.keys.secret == nil {
		hello = append(hello, frame{typ: msgOffer, payload: s.offer})
	}
	if err := c.sendFrames(hello...); err != nil {
		return fail(err)
	}
	b, err := c.expect(s.cfg.DeadAfter, msgWelcome)
	if err != nil {
		return fail(err)
	}
	w, err := decodeWelcome(b)
	if err != nil {
		return fail(err)
	}
	if w.busy {
		return fail(&RefusedError{Code: int(refuseBusy), Reason: busyReason})
	}
	if err := prove(c, s.cfg.DeadAfter, s.keys.secret, h, w, proveSeed, proveReceiver); err != nil {
		return fail(fmt.Errorf("not in this fleet: %w", err))
	}
	if s.keys.secret != nil {
		offered = time.Now()
		if err := c.send(msgOffer, s.offer); err != nil {
			return fail(err)
		}
	}
	// A receiver may take a while to size a large spool.
	b, err = c.expect(s.cfg.DeadAfter+30*time.Second, msgAccept)
	if err != nil {
		return fail(err)
	}
	a, err := decodeAccept(b)
	if err != nil {
		return fail(err)
	}
	c.conn.until = time.Time{}
	local := conn.LocalAddr().(*net.TCPAddr).AddrPort()
	seedAddr := netip.AddrPortFrom(local.Addr().Unmap(), uint16(s.ln.Addr().(*net.TCPAddr).Port))
	return &dialed{c: c, welcome: w, held: min(int64(a.held), s.m.Size), applied: a.applied, upToDate: a.upToDate, seedAddr: seedAddr, pingEvery: pingEvery(s.cfg, a.seedTimeout), datagrams: a.datagrams, offered: offered}, nil
}

// controlDialer opens the seed's control connections.
func controlDialer(cfg Config) *net.Dialer {
	return &net.Dialer{Timeout: cfg.DialTimeout, Control: delayAcks}
}

// handshakeLimit bounds a whole control handshake: its three waits
// (welcome, proof, accept, the last 30 s longer for a large spool) and
// the offer's bytes at offerRate.
func handshakeLimit(cfg Config, offer int) time.Duration {
	return 3*cfg.DeadAfter + 30*time.Second + time.Duration(offer)*time.Second/offerRate
}

// busyReason is what a receiver in another session says, and the seed reports.
const busyReason = "busy with another session"

// isBusy reports whether err is a receiver's refusal for being busy: it
// may take the session once its other one is over.
func isBusy(err error) bool {
	var re *RefusedError
	return errors.As(err, &re) && re.Code == int(refuseBusy)
}

// waitingBusy reports whether receivers busy with another session are
// still waited for.
func (s *seedRun) waitingBusy(now time.Time) bool {
	return !s.over && now.Before(s.opt.WaitBusy)
}

// admit records the outcome of connecting to n and, on success, starts
// reading its control connection.
func (s *seedRun) admit(ctx context.Context, n *node, d *dialed, err error) {
	n.connecting = false
	switch {
	case err != nil && isBusy(err) && !n.joined:
		n.state, n.err = stateBusy, busyReason
		if s.waitingBusy(time.Now()) {
			s.opt.Log.Info("node busy with another session: waiting for it", "node", n.label(), "until", s.opt.WaitBusy.Format(time.TimeOnly))
		} else {
			s.opt.Log.Warn("node busy with another session: not taking part", "node", n.label(), "addr", n.peer.Addr)
		}
		return
	case err != nil:
		if !n.joined {
			n.state, n.err = stateFailed, err.Error()
		}
		s.opt.Log.Warn("node not taking part", "node", n.label(), "addr", n.peer.Addr, "err", err)
		return
	}
	switch {
	case d.welcome.id == (NodeID{}):
		// The zero id names the seed in parent frames and complaints.
		d.c.conn.Close()
		n.state, n.err = stateFailed, "its welcome named no node id"
		return
	case d.welcome.id == n.peer.ID:
	case n.peer.ID != (NodeID{}):
		// Announced under one id, answering under another: it would take
		// the place, and the report line, of the receiver it names.
		d.c.conn.Close()
		n.state, n.err = stateFailed, fmt.Sprintf("announced node id %s, but its welcome says %s", n.peer.ID.Short(), d.welcome.id.Short())
		return
	default: // given by address: its welcome names it
		if other := s.byID(d.welcome.id); other != nil && other != n {
			// Given by address and found by mDNS at another one.
			d.c.conn.Close()
			n.state, n.err = stateFailed, fmt.Sprintf("the same receiver as %s, reached at %s too: give it once", other.label(), n.peer.Addr)
			return
		}
		s.rename(n, d.welcome.id)
	}
	if d.welcome.name != "" {
		n.peer.Name = d.welcome.name
	}
	if n.joined {
		s.opt.Log.Info("node rejoined", "node", n.label(), "bytes_held", d.held)
	}
	n.reachedAt = remoteIP(d.c.conn.Conn)
	s.children.allow(n.reachedAt)
	n.c, n.seedAddr, n.joined, n.state, n.err = newCtrlLink(d.c), d.seedAddr, true, stateActive, ""
	n.lostAt, n.pinged, n.pingEvery = time.Time{}, time.Now(), d.pingEvery
	n.acked, n.ackedAt = 0, time.Time{}
	n.datagrams, n.clock, n.offered = d.datagrams, 0, d.offered
	// A node that comes back starts its reports afresh: its gap is not
	// the time it was away.
	n.reported, n.every, n.stalls, n.starved = time.Time{}, 0, nil, nil
	n.held, n.lastSeen = d.held, time.Now()
	s.t.setBase(n.id, n.held)
	if d.applied {
		// Nothing to send, and nothing to relay: its spool is gone.
		n.state, n.held, n.seconds, n.upToDate = stateOK, s.m.Size, time.Since(s.start).Seconds(), d.upToDate
		if d.upToDate {
			s.opt.Log.Info("node up to date: it applied this package already", "node", n.label())
		} else {
			s.opt.Log.Info("node applied this session already", "node", n.label())
		}
	}
	s.t.setHeld(n.id, n.held)
	s.readers.Add(1)
	go func() {
		defer s.readers.Done()
		s.readNode(ctx, n, d.c)
	}()
}

// join attaches a receiver found after the session started, or one that
// comes back after it was lost.
func (s *seedRun) join(ctx context.Context, p Peer) {
	n := s.byID(p.ID)
	switch {
	case s.over:
		return
	case n == nil && s.overCap():
		return
	case n == nil:
		n = &node{id: s.t.add(), peer: p}
		s.nodes = append(s.nodes, n)
		s.index(n)
		s.opt.Log.Info("late receiver", "node", n.label(), "addr", p.Addr)
	case n.state == stateBusy && !n.connecting && !p.Busy && s.waitingBusy(time.Now()):
		n.peer.Addr = p.Addr // busy before, idle now: offered the session again
	case !n.joined || n.liar || n.failed || n.c != nil || n.connecting || n.state == stateOK || p.Busy:
		return // refused or unreachable at the start, busy, a liar, its apply failed, in the session, or done
	default:
		n.peer.Addr = p.Addr
	}
	n.connecting = true
	s.pending++
	s.readers.Add(1)
	go func() {
		defer s.readers.Done()
		d, err := s.connect(ctx, n.peer)
		select {
		case s.events <- event{n: n, err: err, connected: true, dial: d}:
		case <-ctx.Done():
			if d != nil {
				d.c.conn.Close()
			}
		}
	}()
}
