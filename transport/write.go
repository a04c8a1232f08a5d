package transport

import "time"

// writeFrame writes one framed payload before deadline.
func (c *Conn) writeFrame(payload []byte, deadline time.Time) error {
	_, err := c.writeFrameN(payload, deadline)
	return err
}

// smallFrame is the size up to which a frame is copied into one buffer and
// written with one call; larger payloads go out with writev, uncopied.
const smallFrame = 16 << 10

// writeFrameN writes one framed payload before deadline and returns how
// many bytes reached the socket.
func (c *Conn) writeFrameN(payload []byte, deadline time.Time) (int64, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	// Moving the deadline costs a timer update per write; a deadline in
	// force that still leaves half of WriteTimeout is good enough, unless
	// the caller needs an earlier one.
	if deadline.Before(c.wdl) || time.Until(c.wdl) < c.cfg.WriteTimeout/2 {
		if err := c.nc.SetWriteDeadline(deadline); err != nil {
			return 0, err
		}
		c.wdl = deadline
	}
	var n int64
	var err error
	if len(payload) <= smallFrame {
		c.wbuf = c.cfg.Framing.AppendFrame(c.wbuf[:0], payload)
		var k int
		k, err = c.nc.Write(c.wbuf)
		n = int64(k)
	} else {
		bufs := c.cfg.Framing.Envelope(payload)
		n, err = bufs.WriteTo(c.nc)
	}
	if err != nil {
		return n, err
	}
	c.stats.framesOut.Add(1)
	c.stats.bytesOut.Add(int64(len(payload)))
	c.lastActivity.Store(time.Now().UnixNano())
	return n, nil
}
