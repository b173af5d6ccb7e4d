// Package relay moves a package from a seed to many receivers along
// binary trees of TCP connections, verifying every block against a signed
// manifest before it is stored, relayed or applied.
//
// # Roles and connections
//
// The seed opens one control connection to every receiver. Over it the seed
// offers the signed session, names each node's parent, pings, and ends the
// session; the node reports complaints about its parent and its result,
// and its progress (its heartbeat) by datagram, or over the connection
// where datagrams do not come through (below). Data flows the other way round: each node opens a
// data connection to its parent (another node, or the seed) and asks for
// the blocks it lacks; the parent streams each block as soon as it has
// verified it, so a hop costs one block's time on the link, whatever the
// chunk size. A node feeds each child from its spool in a goroutine of its
// own, so a slow child never holds up its parent or siblings; a pacer
// keeps a parent's children (the seed's, tree by tree) abreast, so no
// subtree inherits a lag from an uneven split of the uplink, and each
// child's flow is paced at 1.5 x the fastest any of the parent's flows was
// seen to move data while busy (on Linux: TCP_INFO, SO_MAX_PACING_RATE),
// so no burst far above the link crowds the other tree's flow out of the
// child's switch port; under Config.MaxRate, or on a link under 1 Gbit/s
// whose rate the platform shows (the NIC's speed, a tbf at the root of its
// egress), each flow is paced at an even share of the cap, or of 97 % of
// the link, from its first byte. When a node
// dies or stalls, the seed names a new parent for its children, which
// resume by asking for the blocks they still lack: no verified block
// moves twice.
//
// # Frames
//
// Every message is one frame:
//
//	magic   4 bytes  "TCST"
//	version 1 byte   protocol version, currently 4
//	type    1 byte   message type, below
//	length  4 bytes  payload length, big-endian
//	payload length bytes
//
// A frame whose magic or version differs ends the connection (see
// IsVersionMismatch). The length is checked against the type's limit before
// anything is allocated: 32 MiB + 4 KiB for offer, 5 bytes + 64 KiB + 16
// for block, 4 bytes + 128 KiB for hashes, 16 MiB + 64 for want's bitmap
// of up to 2^27 blocks, 64 KiB for everything else. Then by role and
// state: a child holds block and hashes frames to the session's block size
// and chunk, a ping to nothing and a refusal to 4 KiB; a parent takes only
// a want of exactly the session's length, and then an empty held; the seed takes from a node only
// progress, result, complain and ping frames of at most 16 KiB; a node
// takes from its seed only parent, end, ping and report frames. A frame of a type
// the reader does not expect is refused from its header, and payloads over
// 1 MiB are buffered only as their bytes arrive, so a header alone never
// costs memory.
//
// Liveness is judged by progress: a peer is dead when no bytes move on its
// connection for Config.DeadAfter, however long a frame takes, so a
// healthy link at any rate and any chunk size stays up. A parent that sends
// nothing new for as long (pings, blocks the child holds, block hashes with
// no block after them) is given up on as stalled.
//
// Integers are big-endian. A string or blob is a uint32 length and its
// bytes, with a per-field limit (4 KiB for texts). An id is 16 bytes.
// Decoders ignore bytes after the fields they know, so fields are only
// ever appended.
//
// # Messages
//
// Types are append-only.
//
//	1  hello     connector → listener  role u8 (1 control, 2 data), node id, name, nonce (16), sealed u8
//	2  welcome   listener → connector  node id, name, busy u8, nonce (16), sealed u8
//	3  offer     seed → node           signed manifest (below)
//	4  accept    node → seed           bytes already held u64, applied u8 (nothing to send: below), up to date u8,
//	                                   seed timeout u32 (milliseconds the node waits on a silent seed;
//	                                   a node of an earlier build ends the accept before it), datagrams u8
//	                                   (1: it takes report frames; a node of an earlier build ends the
//	                                   accept before it)
//	5  refuse    either                code u8, reason string
//	6  parent    seed → node           parent id (zero: the seed), address "ip:port", stripes u8 (1 or 2), stripe u8,
//	                                   feeds u8 (how many children the node feeds in that stripe now; the
//	                                   parent the node has, named again, only says that; a seed of an earlier
//	                                   build ends the parent before it), kids u8 (at most 64), then per child:
//	                                   node id, address (16 bytes, IPv4 mapped) the seed reached it at (the
//	                                   children the node may feed in that stripe; a seed of an earlier build
//	                                   ends the parent before them)
//	7  want      child → parent        session id, stripes u8, stripe u8, bitmap of blocks held (LSB first)
//	8  (retired: whole chunks, version 1)
//	9  progress  node → seed           bytes verified and held u64, bytes received u64, stripes u8, bytes held
//	                                   of each stripe u64, milliseconds u64 (how long the node's session has
//	                                   run, at least 1: the seed measures the node's rate on its clock;
//	                                   a node of an earlier build ends the progress before it), stalls u8
//	                                   (at most 16, the longest first), then per stall: child node id (as its
//	                                   hello said), its address (16 bytes, IPv4 mapped), stripe u8,
//	                                   milliseconds u32 (the flow to it has taken nothing that long), starved
//	                                   u8 (at most 16), then per stripe starved: parent node id, 16 zero
//	                                   bytes, stripe u8, milliseconds u32 (that parent has sent nothing that
//	                                   long); sent at once when either list grows (a node of an earlier
//	                                   build ends the progress before them)
//	10 result    node → seed           ok u8, error string, bytes received u64, milliseconds u64, flushed u8,
//	                                   output string (the end of the apply command's stdout and stderr;
//	                                   a node of an earlier build ends the result before it)
//	11 end       seed → node           (empty) the session is over
//	12 ping      either                (empty) the link is alive
//	13 complain  node → seed           parent id, kind u8 (1 lost, 2 corrupt, 3 refused, 4 stalled), block u32, detail string, stripe u8
//	14 hashes    parent → child        chunk u32, the SHA-256 of each of its blocks (32 bytes each)
//	15 block     parent → child        block u32, flags u8 (0 raw, 1 sealed), data
//	16 proof     either                HMAC-SHA-256 (32 bytes), below
//	17 report    seed → node           port u16, token (16): send progress by datagram to the seed's address
//	                                   at port (below); port 0: over this connection from now on
//	18 held      child → parent        (empty) the child holds its whole stripe, every block verified; one
//	                                   that holds it when named sends its want and held at once
//
// Refusal codes: 1 busy, 2 untrusted seed key, 3 bad offer, 4 no space,
// 5 no such session, 6 expired or stale session, 7 local error.
//
// A receiver in another session says busy in its welcome, and refuses
// with code 1 an offer it cannot take for that reason. The seed plans
// such a node nowhere and reports it busy, apart from the failed; with
// SeedOptions.WaitBusy, until then, it offers the session again each time
// discovery finds the node idle, and the session does not end without it.
//
// An accept says applied (nothing to send or relay: the node is done) when
// the offer is the very session the node applied last, or when it is up
// to date: a newer session of the package it applied last from the same
// key for the same group, under the same name and with the same actions
// (ReceiverOptions.Actions), whose manifest does not say force; then up to
// date is 1 too, and the session counts as the last applied from then on.
// Nothing is fetched or applied, and the seed reports the node ok, up to
// date. Such a node closes the connection at the seed's end, or
// DeadAfter after its accept, pings or not: a host that replays an offer
// the node applied holds it from the next session no longer. A session that begins to change what was applied (a write target
// written as blocks come, a stream, an apply) first withdraws that record
// but for its creation time (the rule against older sessions stays), so
// one stopped part-way leaves nothing applied or up to date.
//
// A control connection runs hello, welcome, (with a fleet secret: proof
// each way), offer, then accept or refuse (without a fleet secret the seed
// sends the offer in one write with its hello, not waiting for the
// welcome); after accept the seed sends
// report (to a node whose accept says it takes one, in the same write as
// its first parent frames), parent (again whenever it re-parents the
// node, or whenever the count of children it feeds changes), ping (three
// times in the node's seed timeout, at most every heartbeat; every
// DeadAfter/2 to a node that did not say it) and finally end: to a node as
// soon as it and all its children applied the package (it has nothing left
// to relay; one the seed is probing, below, once judged), to the rest
// when the session is over, in one packet with the close where the
// platform allows; the node sends progress every DeadAfter/4 (or
// heartbeat, if longer; the first a period after its accept), complain when a parent fails it, and result once
// it has applied the package (or failed to; a node stopped while it applies
// sends none, so the seed finds it lost and may wait for it to rejoin).
// A node need not wait for its end: once it sent a result that says it
// applied the package (one whose apply failed waits for its end), has
// held frames from as many children as its parent frames say it feeds,
// feeds no one, had no feed end otherwise (a child that found a block
// corrupt says nothing, and the seed may probe the parent on its word),
// and the seed acknowledged all it sent on the connection (Linux:
// TCP_INFO; elsewhere it waits), it begins no feed (a child that comes
// then is refused: no session), closes the connection, and the seed,
// seeing a node that applied close, takes it out of the session as it
// would have with end; a child that still needed it complains, and moves. A
// data connection runs hello, (with a fleet secret: welcome and proof from
// the parent, proof from the child), want, then hashes, block and ping
// frames until the child holds its stripe, and then held from the child (a
// node of an earlier build sends none, and ignores it): before any block of a chunk the
// child lacks, a parent sends the chunk's block hashes. A block whose hash
// is that of as many zero bytes is never sent: the child marks it held when
// the hashes come, and a chunk whose signed hash is that of empty blocks
// needs neither hashes nor blocks.
//
// # Progress by datagram
//
// A progress frame on a control connection costs the seed a TCP
// acknowledgement on its uplink, the link every tree starts from (at 128
// nodes and 4 Mbit/s, 2.7 % of what it sent); a datagram costs it nothing
// to take, and one lost is made good by the next. A node told so by a
// report frame sends its progress to the seed's address at the port it
// names, from its own end of the control connection, as one UDP datagram:
//
//	header  10 bytes  as a frame's, type 9 (progress), length of the rest
//	token   16 bytes  as the report frame said
//	payload           a progress frame's payload
//	seal    16 bytes  HMAC-SHA-256 over header, token and payload, first half
//
// keyed by the token, or with a fleet secret by HMAC-SHA-256 under the
// secret's proof key over "progress datagram" and the token. The seed
// takes a datagram only from the node's own address, under its current
// token, sealed, newer (by the node's session clock) than the last
// progress or result it took from the node, and no later than the node's
// session can have run since the seed sent its offer (with 500 ms to
// spare: the clocks of two machines), so one sent again, late, or forged
// with a clock far ahead keeps no node alive and freezes none; anything else is dropped unanswered, before it
// reaches the session's loop. A node the seed has not heard from for half
// of DeadAfter (two reports) is told (a report frame with port 0) to
// report over its connection from then on: its datagrams do not come
// through (a firewall, say); but while most nodes are unheard at once,
// those whose datagrams did come are not (the seed was slow to hear
// them). A node that cannot send one does so by itself. The seed judges
// every node by when it last heard of it, on either path, and sets no
// read deadline on control connections. A datagram shows a node alive one
// way only, so the seed also drops a node whose end of the control
// connection has acknowledged nothing of what waits there (a ping, a
// parent) for twice DeadAfter and a second (a link out for just under
// DeadAfter delays an acknowledgement that long, as TCP backs off), where
// the platform shows it (Linux: TCP_INFO): datagrams that still come, its
// own or sealed by a host that read its token, keep no node in the
// session that the seed can no longer reach, unless that host also forges
// the node's TCP acknowledgements, which takes reading and injecting on
// the control connection itself.
//
// # Who is believed
//
// A receiver serves a connection only once it proves itself: a seed by a
// trusted, valid offer, a child by a want for the running session, each
// within 5 s; until then it holds one of 64 unproven slots, 8 per source
// address (when all 64 are taken, a new connection closes the one that
// has waited longest), and never makes the receiver busy. The seed's data port takes
// connections only from the addresses it reached its session's nodes at,
// at most 8 from one address before their want, a new one closing that
// address's oldest, and feeds a stripe only to a node it placed under
// itself there, by the node id of the hello and the address it reached
// the node at, one connection per node and stripe (a new one ends the
// old): a node of the session that asks for the package over and over
// takes no share of the seed's uplink from the roots. A relay likewise
// feeds a stripe only to the children its parent frame for that stripe
// names, by hello id and address, one connection each, and the seed's own
// fetch (the zero id, from the seed's address); a child it has not been
// told of yet waits up to DeadAfter/2 for the seed's word (the seed tells
// both at once, relays first and the shallowest first, but a child may
// still come first), then is refused; before the seed's first parent
// frame it feeds no one; a child the seed moves away loses its feed; and
// a want must name the session's count of stripes. A seed of
// an earlier build names no children: its relays feed any. A welcome must name the node id the receiver was
// found under (or any id but zero, for one given by address): the seed
// refuses one that names another. A relay forwards a compressed block as
// it came only when it is one zstd frame and nothing else, and otherwise
// compresses the verified block itself. The
// seed believes a node's
// progress only as far as its parents can have given it, and does not
// judge a node slow while it claims more than that (its believed rate is
// then its parents', as of their last reports). It measures rates on each
// node's clock, but what a healthy tree delivers on its own clock too, at
// the longer of the two, so a node whose clock stands still while its
// claims grow sets no rate the others are held to. A complaint
// moves the complainer; for a corrupt block the seed fetches that block
// from the accused itself, as a child would, and fails the relay only if
// its copy is bad, while a node whose accusations it found false twice is
// heard no more (it still moves, but the seed fetches on its word no more:
// a relay may send the seed intact what it corrupts for one child, so the
// child is not failed for it); a relay that refuses the seed's own fetch, or that two children
// complained of, feeds no one from then on, and each node's complaints
// count so against one relay at most. Every session ends: nodes
// still at work 4 × the time the first node took plus SessionGrace after
// the start (before any finished: the package at 1 Mbit/s plus
// SessionGrace) are failed; that time counts from no sooner than the seed
// had read every block of the package to send it, so a node that says it
// applied the package before it can have narrows nothing.
//
// # Fleet secret
//
// With a Secret, hello and welcome say sealed, and each side proves it
// holds the secret with HMAC-SHA-256, keyed by a key derived from it
// (HKDF), over its role ("seed", "receiver", "parent", "child"), its own
// nonce and the peer's: a proof is fresh and cannot be reflected. The seed
// proves itself and sends its offer only after the receiver proved
// itself; a side that disagrees on holding a secret is refused. Every
// block is sealed with AES-256-GCM under a key derived from the secret and
// the session id, the block index as nonce and the session id as
// associated data; the hashes are of the plain blocks, so verification is
// unchanged. Block g belongs to stripe g mod stripes; with one stripe a node
// has one parent, with two it fetches every other block from its parent in
// that stripe's tree.
//
// # Trees
//
// With Config.Trees = 1 the seed feeds two children and node i (in the
// order the seed found them) feeds 2i+2 and 2i+3. With 2 (the default) each
// stripe has its own tree with one root the seed feeds, node i feeding
// 2i+1 and 2i+2, and the second tree takes the nodes in reverse order: a
// node inner in one tree is a leaf in the other, so every node, the seed
// included, uploads about one copy. Re-parenting works per stripe. A root
// (the seed its parent in a tree, and children of its own there) reads the
// other stripe no further than 256 KiB ahead of its own while its own
// moves, leaving the rest in the connection: where its link is short of
// both stripes, the one its whole tree waits on goes first (a hold that
// lasts DeadAfter/4 lets 16 KiB through, so the parent still sees bytes
// move).
//
// Repairs keep that shape where they can. A lost node with two children
// is replaced by a node idle in every tree if there is one; otherwise
// each child gets a new parent that is live, not slow or failed, outside
// the child's subtree, holds about what the child holds and feeds in no
// other tree: the seed while it has fewer roots than the layout gives it,
// then one that keeps every node within ⌈log2(N+1)⌉ + 1 hops of the seed,
// then an idle one, then the shallowest, then the one holding most. A
// node with no children and no such parent takes the place of a shallow
// leaf and feeds it; failing that, a node that feeds in the other tree
// (within the depth bound), and the seed beyond its share last: before
// it, any such parent though it holds less than the child (the child waits
// for its lag, and only its subtree does, where a third flow on the seed's
// uplink slows every node). Late and returning receivers are placed the
// same way. After a complain the node gets a new parent at once, never the
// one it complained of for a
// second; complaining again in a row, it waits 1 s, doubling to 30 s,
// before the seed names its next parent. A complaint about a parent the
// node no longer has is ignored.
//
// # Signed manifest
//
// The offer's payload is:
//
//	manifest  blob
//	key       32 bytes  the seed's ed25519 public key
//	signature 64 bytes  ed25519 over "treecast manifest v4\x00" + manifest
//
// and the manifest itself:
//
//	version u8 (4), session id, created and expires (unix ns, int64), name string (≤ 255 bytes,
//	a plain file name), group string (≤ 63 bytes), size u64, chunk size u32, block size u32,
//	whole-file SHA-256 (32), flags u8 (bit 0: force; no other bit may be set),
//	chunk count u32, then count chunk hashes
//
// A receiver takes only a session for its own group, and refuses one
// created before the last it applied from the same key for the same group,
// whatever the package is called, even when its package is the one in
// place. Force makes a receiver apply the package where it is up to date
// (above); it overrides nothing else.
//
// The package is cut into blocks (16 KiB unless the chunk size is not a
// multiple of it; a power of two from 4 to 64 KiB), block g at offset
// g × block size, and blocks are grouped into chunks (1 MiB by default, a
// multiple of the block size). A chunk's hash is the SHA-256 of its
// blocks' SHA-256s, in order: the manifest costs 32 bytes a chunk (0.003 %
// of the package at the defaults), yet a child checks each block alone, as
// soon as it arrives, against the chunk's block hashes that it checked
// against the manifest first (BitTorrent v2's piece layers, two levels
// deep).
//
// The signature is checked before the manifest is decoded, and the
// manifest's rules (name, sizes, count = ⌈size / chunk size⌉, expiry) before
// a byte is written to the spool. Every block is checked against its hash
// before it is stored, relayed or applied, so once every block is held the
// whole file is verified. A lying relay is caught at its first bad block
// or block hash. Relays cannot forge either: they hold no key.
//
// # Timing
//
// The seed plans the trees once every handshake has ended, or once none
// has for 500 ms: a receiver whose handshake ends later (a host that takes
// the connection and says nothing, one sizing a large spool) joins the
// running session as a late receiver does, and holds no other back.
// Config.Heartbeat paces progress frames and pings; a parent, child or node
// silent for Config.DeadAfter is dead to its peer, and a relay silent to
// the seed for three quarters of that already loses its children to other
// parents (it may feed again once heard), or for three eighths of it when
// a node linked to it says so too, in its progress: a parent, that its
// flow to the relay's address has had data waiting and none of it
// acknowledged for a second (the seed sees this of its own flows), or a
// child, that the relay sent it nothing, not even a ping, for as long (a
// node seen to report less often is given one and a half of its periods). The relay hangs or
// its link is down. A sender's flow stalled so also gives up its share of
// a split link until it moves again. A receiver gives up on a
// silent seed after Config.SeedTimeout and keeps its spool, keyed by the
// package's SHA-256, so the next session of the same package resumes it;
// what it resumes is read back and checked against the manifest first.
// A successful session clears every spool, so interrupted sessions of
// packages that never come back do not pile up: in <dir>/spool, the regular
// files named <sha256>.part, .have and .have.tmp, and nothing else. The
// parts of a receiver's state folder (spool, lock, node-id, applied.json)
// must not be symlinks: CheckStateDir refuses them, at start and again before
// each spool is opened.
//
// # Limits
//
// A receiver answers every offer it refuses with the reason, but logs
// refusals once a minute per address (256 addresses, then the rest as
// one), the next line saying how many were not. A receiver handles at
// most 256 connections at once (a session needs its
// seed, a few children per tree and their reconnects), of which 64
// unproven; more are closed unanswered. An offer over 1 MiB is read only
// in one of two slots, and any offer's bytes must keep up with 512 kbit/s
// once 5 s have passed since they began, so a host that announces a large
// offer and dribbles it holds a slot for seconds. A session takes at most
// Config.MaxNodes receivers.
// Every handshake step has a deadline of Config.DeadAfter, and the seed's
// whole control handshake one of 3 × DeadAfter + 30 s and the offer's
// bytes at 512 kbit/s, so a host that dribbles its answer a byte at a time
// holds no session's end.
package relay
