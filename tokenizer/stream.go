package tokenizer

import "unicode/utf8"

// Streamer decodes ids one at a time, as they are generated, and returns
// only whole UTF-8 characters: bytes of a character that byte tokens split
// wait for the rest. Its output, Push after Push and then Flush, is
// Decode of all the ids when that is valid UTF-8; an invalid byte comes
// out as U+FFFD (one per byte, as Go's []rune conversion does). Like
// Decode, it drops the prefix space of the first id (push BOS first to
// keep it). A Streamer is not safe for concurrent use.
type Streamer struct {
	t       *Tokenizer
	pending []byte // the start of an unfinished character
	started bool
}

// NewStreamer returns a Streamer for a new sequence of ids.
func (t *Tokenizer) NewStreamer() *Streamer {
	return &Streamer{t: t}
}

// Push adds id and returns the text it completes, possibly "".
func (s *Streamer) Push(id int32) string {
	s.pending = append(s.pending, s.t.piece(id, !s.started)...)
	s.started = true
	return s.take(false)
}

// Flush returns what is left, an unfinished character as U+FFFD per byte,
// and starts the Streamer over for a new sequence.
func (s *Streamer) Flush() string {
	out := s.take(true)
	s.started = false
	return out
}

// take returns the complete characters of pending, and with all also the
// incomplete tail, keeping the rest.
func (s *Streamer) take(all bool) string {
	var out []byte
	p := s.pending
	for len(p) > 0 {
		// FullRune is false only for a prefix of a valid encoding, which
		// later bytes may complete.
		if !all && !utf8.FullRune(p) {
			break
		}
		r, n := utf8.DecodeRune(p)
		if r == utf8.RuneError && n == 1 {
			out = utf8.AppendRune(out, utf8.RuneError)
		} else {
			out = append(out, p[:n]...)
		}
		p = p[n:]
	}
	s.pending = append(s.pending[:0], p...)
	return string(out)
}
