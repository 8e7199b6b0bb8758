// Chat calls from Go's net/http over HTTPS (crypto/tls), the way Go agents call cloud APIs.
//
//	go_https -base-url https://127.0.0.1:PORT -cacert cert.pem -model M -n N [-stream] [-h2] [-wait]
//
// With -wait it prints "ready" and makes its calls only once it gets SIGUSR1 (the test sends it
// when the agent has probed this executable).
//
// With -h2 the transport negotiates HTTP/2 (net/http's default when it may; a custom TLS config
// needs ForceAttemptHTTP2). Prints one JSON line like workload.py: requests, ok, prompt_tokens,
// completion_tokens (the server's own usage), errors, and the protocol the responses came in.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

type usage struct {
	PromptTokens     uint64 `json:"prompt_tokens"`
	CompletionTokens uint64 `json:"completion_tokens"`
}

type summary struct {
	Requests         uint64            `json:"requests"`
	Ok               uint64            `json:"ok"`
	PromptTokens     uint64            `json:"prompt_tokens"`
	CompletionTokens uint64            `json:"completion_tokens"`
	Errors           map[string]uint64 `json:"errors"`
	Proto            string            `json:"proto"`
}

func call(c *http.Client, url, model string, stream bool) (*usage, string, error) {
	req := map[string]any{
		"model":      model,
		"max_tokens": 5,
		"messages":   []map[string]string{{"role": "user", "content": "Why is the sky blue?"}},
	}
	if stream {
		req["stream"] = true
		req["stream_options"] = map[string]bool{"include_usage": true}
	}
	body, _ := json.Marshal(req)
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		io.Copy(io.Discard, resp.Body)
		return nil, resp.Proto, fmt.Errorf("status %d", resp.StatusCode)
	}
	if !stream {
		var v struct{ Usage usage }
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			return nil, resp.Proto, err
		}
		return &v.Usage, resp.Proto, nil
	}
	var u *usage
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "data: ") || line == "data: [DONE]" {
			continue
		}
		var chunk struct{ Usage *usage }
		if err := json.Unmarshal([]byte(line[6:]), &chunk); err != nil {
			return nil, resp.Proto, err
		}
		if chunk.Usage != nil {
			u = chunk.Usage
		}
	}
	if u == nil {
		return nil, resp.Proto, fmt.Errorf("no usage")
	}
	return u, resp.Proto, sc.Err()
}

func main() {
	base := flag.String("base-url", "", "server root (https://host:port)")
	cacert := flag.String("cacert", "", "PEM file of the server's CA")
	model := flag.String("model", "m1", "model name")
	n := flag.Int("n", 1, "calls, one after another on one keep-alive connection")
	stream := flag.Bool("stream", false, "streamed answers (SSE, with usage)")
	h2 := flag.Bool("h2", false, "negotiate HTTP/2")
	wait := flag.Bool("wait", false, "print ready, then wait for SIGUSR1 before calling")
	flag.Parse()
	if *wait {
		resume := make(chan os.Signal, 1)
		signal.Notify(resume, syscall.SIGUSR1)
		fmt.Println("ready")
		<-resume
	}
	pem, err := os.ReadFile(*cacert)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: *h2,
		MaxConnsPerHost:   1,
	}
	c := &http.Client{Transport: tr}
	s := summary{Errors: map[string]uint64{}}
	for i := 0; i < *n; i++ {
		s.Requests++
		u, proto, err := call(c, *base+"/v1/chat/completions", *model, *stream)
		if proto != "" {
			s.Proto = proto
		}
		if err != nil {
			s.Errors[err.Error()]++
			continue
		}
		s.Ok++
		s.PromptTokens += u.PromptTokens
		s.CompletionTokens += u.CompletionTokens
	}
	tr.CloseIdleConnections()
	out, _ := json.Marshal(s)
	fmt.Println(string(out))
}
