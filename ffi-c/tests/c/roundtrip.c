/* The C ABI from C: servers with three methods served by a host thread,
 * called through the ABI's channel.
 * Built and run by ffi-c/tests/c_abi.rs, once against libcourier_ffi.a and once
 * against libcourier_ffi.so. Two servers: one served by a host thread turning
 * with courier_server_take, one by courier_server_next_batch + a reply batch.
 * Prints "ok <check>" per check; exits 1 at the first failure. */
#include "courier.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef COURIER_DEBUG_PANIC
/* Debug builds only, deliberately not in courier.h (see ffi-c/src/lib.rs). */
bool courier_debug_panic(CourierError **err);
#endif

#define S(lit) (const uint8_t *)(lit), (sizeof(lit) - 1)

#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                        \
      fprintf(stderr, "\n");                               \
      exit(1);                                             \
    }                                                      \
  } while (0)

static int str_is(CourierStr s, const char *want) {
  return s.len == strlen(want) && (s.len == 0 || memcmp(s.ptr, want, s.len) == 0);
}

static void print_err(const char *what, const CourierError *e) {
  CourierStr m = courier_error_message(e);
  fprintf(stderr, "%s: kind %d code %d: %.*s\n", what, (int)courier_error_kind(e), courier_error_code(e), (int)m.len,
          (const char *)m.ptr);
}

/* Expects `e` set, of `kind` (and gRPC `code` unless -1), whose message
 * contains `needle`; frees it. */
static void expect_err(const char *check, CourierError *e, CourierErrorKind kind, int code, const char *needle) {
  CHECK(e != NULL, "%s: no error", check);
  CourierStr m = courier_error_message(e);
  char buf[512];
  snprintf(buf, sizeof buf, "%.*s", (int)m.len, (const char *)m.ptr);
  if (courier_error_kind(e) != kind || (code >= 0 && courier_error_code(e) != code) || strstr(buf, needle) == NULL) {
    print_err(check, e);
    CHECK(0, "%s: want kind %d code %d and a message with \"%s\"", check, (int)kind, code, needle);
  }
  courier_error_free(e);
  printf("ok %s: %s\n", check, buf);
}

enum { ECHO = 1, FAIL = 2, STREAM = 3 };

/* Server streaming: three messages, each the request and its number; then
 * OK. Frees the call. */
static void serve_stream(CourierCall *call, CourierStr request) {
  CourierError *e = NULL;
  for (int k = 0; k < 3; k++) {
    char msg[256];
    int len = snprintf(msg, sizeof msg, "%.*s #%d", (int)request.len, (const char *)request.ptr, k);
    if (!courier_call_send(call, (const uint8_t *)msg, (size_t)len, &e)) {
      print_err("server send", e);
      courier_error_free(e);
      e = NULL;
      break;
    }
  }
  if (!courier_call_finish(call, 0, NULL, 0, NULL, 0, 0, false, &e)) {
    print_err("server finish", e);
    courier_error_free(e);
  }
  courier_call_free(call);
}

/* The host thread: one courier_server_take per turn answers the unary calls of
 * the previous turn and takes the next ones, until the server stops (-1). */
static void *serve(void *arg) {
  CourierServer *server = arg;
  CourierTakenCall taken[16];
  CourierAnswer answers[16];
  uint8_t data[4096];
  size_t n_answers = 0, used = 0;
  for (;;) {
    intptr_t n = courier_server_take(server, NULL, answers, n_answers, data, used, taken, 16, 200);
    n_answers = 0;
    used = 0;
    if (n < 0) break;
    for (intptr_t i = 0; i < n; i++) {
      CourierTakenCall *t = &taken[i];
      if (t->method_id == STREAM) {
        serve_stream(t->call, t->request);
        continue;
      }
      CourierAnswer *a = &answers[n_answers++];
      memset(a, 0, sizeof *a);
      a->call = t->call;
      if (t->method_id == ECHO) {
        /* The request prefixed with the method path read from the borrowed ctx. */
        CourierStr method = courier_ctx_method(t->ctx);
        a->data.offset = used;
        memcpy(data + used, method.ptr, method.len);
        used += method.len;
        data[used++] = ' ';
        memcpy(data + used, t->request.ptr, t->request.len);
        used += t->request.len;
        a->data.len = used - a->data.offset;
      } else {
        /* An app error: NOT_FOUND, enum c.test.Err value 3. */
        static const char msg[] = "no such thing", app[] = "c.test.Err";
        a->code = 5;
        a->app_error_value = 3;
        a->data.offset = used;
        a->data.len = sizeof msg - 1;
        memcpy(data + used, msg, sizeof msg - 1);
        used += sizeof msg - 1;
        a->app_error_enum.offset = used;
        a->app_error_enum.len = sizeof app - 1;
        memcpy(data + used, app, sizeof app - 1);
        used += sizeof app - 1;
      }
    }
  }
  courier_server_release(server);
  return NULL;
}

/* The other host loop: courier_server_next_batch (which also flushes the
 * previous turn's replies), courier_call_start, and a CourierReplyBatch
 * filled with courier_reply_batch_push / _push_error. */
static void *serve_batches(void *arg) {
  CourierServer *server = arg;
  CourierReplyBatch *batch = courier_reply_batch_new();
  CourierCallInfo infos[16];
  for (;;) {
    intptr_t n = courier_server_next_batch(server, batch, infos, 16, 200);
    if (n < 0) break;
    for (intptr_t i = 0; i < n; i++) {
      CourierCallInfo *ci = &infos[i];
      CourierStr req;
      CourierCtx *ctx = NULL;
      CourierError *e = NULL;
      CHECK(courier_call_start(ci->call, &req, &ctx, &e), "call_start");
      CHECK(!courier_call_start(ci->call, &req, NULL, &e) && courier_error_kind(e) == COURIER_ERROR_KIND_STATE,
            "a call started twice");
      courier_error_free(e);
      e = NULL;
      if (ci->method_id == STREAM) {
        courier_ctx_free(ctx);
        serve_stream(ci->call, req);
        continue;
      }
      bool ok;
      if (ci->method_id == ECHO) {
        char buf[512];
        CourierStr method = courier_ctx_method(ctx);
        int len = snprintf(buf, sizeof buf, "%.*s %.*s", (int)method.len, (const char *)method.ptr, (int)req.len,
                           (const char *)req.ptr);
        ok = courier_reply_batch_push(batch, ci->call, (const uint8_t *)buf, (size_t)len, &e);
      } else {
        ok = courier_reply_batch_push_error(batch, ci->call, 5, S("no such thing"), S("c.test.Err"), 3, false, &e);
      }
      CHECK(ok, "reply_batch_push");
      CHECK(!courier_reply_batch_push(batch, ci->call, S("again"), &e) && courier_error_kind(e) == COURIER_ERROR_KIND_STATE,
            "a call answered twice");
      courier_error_free(e);
      CHECK(courier_reply_batch_len(batch) > 0, "empty reply batch");
      courier_ctx_free(ctx);
      courier_call_free(ci->call); /* answered: its reply waits in the batch */
    }
  }
  courier_reply_batch_free(batch);
  courier_server_release(server);
  return NULL;
}

/* A server with the three methods Echo, Fail (app errors c.test.Err) and
 * Stream (server streaming). */
static CourierServer *new_server(void) {
  CourierError *e = NULL;
  CourierServer *server = courier_server_new(NULL, &e);
  CHECK(server != NULL, "server_new");
  CHECK(courier_server_register(server, S("/c.test.T/Echo"), COURIER_METHOD_KIND_UNARY, 5000, NULL, 0, ECHO, &e),
        "register Echo");
  CHECK(courier_server_register(server, S("/c.test.T/Fail"), COURIER_METHOD_KIND_UNARY, 5000, S("c.test.Err"), FAIL, &e),
        "register Fail");
  CHECK(courier_server_register(server, S("/c.test.T/Stream"), COURIER_METHOD_KIND_SERVER_STREAMING, 5000, NULL, 0,
                                STREAM, &e),
        "register Stream");
  return server;
}

/* Calls the three methods of `server` (served by thread `host` on `port`)
 * through a channel, then shuts it down and frees it. */
static void exercise(const char *label, CourierServer *server, pthread_t host, int port) {
  CourierError *e = NULL;
  char check[128];
  char target[64];
  int tlen = snprintf(target, sizeof target, "127.0.0.1:%d", port);
  CourierChannel *ch = courier_channel_new((const uint8_t *)target, (size_t)tlen, NULL, &e);
  CHECK(ch != NULL, "channel_new");
  CourierCtx *bg = courier_ctx_background();
  CourierCtx *ctx = courier_ctx_with_timeout(bg, 5000000000LL);
  int64_t left = 0;
  CHECK(courier_ctx_remaining(ctx, &left) && left > 0 && left <= 5000000000LL, "ctx remaining %lld", (long long)left);

  CourierMethod *echo = courier_method_new(S("/c.test.T/Echo"), COURIER_METHOD_KIND_UNARY, 5000, NULL, 0, &e);
  CHECK(echo != NULL, "method Echo");
  CourierReply *r = courier_channel_unary(ch, ctx, echo, S("hello from C"), NULL, &e);
  if (r == NULL) print_err("Echo", e);
  CHECK(r != NULL, "Echo failed");
  CHECK(str_is(courier_reply_message(r), "/c.test.T/Echo hello from C"), "Echo reply %.*s",
        (int)courier_reply_message(r).len, (const char *)courier_reply_message(r).ptr);
  courier_reply_free(r);
  printf("ok %s: unary reply round-trips\n", label);

  /* Many calls from several batches. */
  for (int i = 0; i < 200; i++) {
    char req[32];
    int len = snprintf(req, sizeof req, "%d", i);
    r = courier_channel_unary(ch, ctx, echo, (const uint8_t *)req, (size_t)len, NULL, &e);
    CHECK(r != NULL, "Echo %d failed", i);
    char want[64];
    snprintf(want, sizeof want, "/c.test.T/Echo %d", i);
    CHECK(str_is(courier_reply_message(r), want), "Echo %d: wrong reply", i);
    courier_reply_free(r);
  }
  printf("ok %s: 200 unary calls\n", label);

  CourierMethod *fail = courier_method_new(S("/c.test.T/Fail"), COURIER_METHOD_KIND_UNARY, 5000, S("c.test.Err"), &e);
  CHECK(fail != NULL, "method Fail");
  CHECK(courier_channel_unary(ch, ctx, fail, S("x"), NULL, &e) == NULL, "Fail succeeded");
  CourierStr app_enum;
  int32_t app_value = 0;
  CHECK(courier_error_app_error(e, &app_enum, &app_value) && str_is(app_enum, "c.test.Err") && app_value == 3,
        "app error not received");
  CHECK(courier_error_is_downstream(e), "a client call's status is downstream");
  snprintf(check, sizeof check, "%s: app error status", label);
  expect_err(check, e, COURIER_ERROR_KIND_STATUS, 5, "no such thing");
  e = NULL;

  CourierMethod *missing = courier_method_new(S("/c.test.T/Missing"), COURIER_METHOD_KIND_UNARY, 5000, NULL, 0, &e);
  CHECK(courier_channel_unary(ch, ctx, missing, S("x"), NULL, &e) == NULL, "Missing succeeded");
  snprintf(check, sizeof check, "%s: missing method", label);
  expect_err(check, e, COURIER_ERROR_KIND_STATUS, 12, "");
  e = NULL;

  CourierMethod *stream = courier_method_new(S("/c.test.T/Stream"), COURIER_METHOD_KIND_SERVER_STREAMING, 5000, NULL, 0, &e);
  CourierClientCall *call = courier_channel_stream(ch, ctx, stream, NULL, &e);
  CHECK(call != NULL, "channel_stream");
  CHECK(courier_client_call_send(call, S("tick"), &e), "stream send");
  courier_client_call_close_send(call);
  CourierStr msg;
  for (int k = 0; k < 3; k++) {
    char want[32];
    snprintf(want, sizeof want, "tick #%d", k);
    int got = courier_client_call_recv(call, &msg, &e);
    if (got < 0) print_err("stream recv", e);
    CHECK(got == 1 && str_is(msg, want), "stream message %d", k);
  }
  CHECK(courier_client_call_recv(call, &msg, &e) == 0, "stream did not end OK");
  courier_client_call_free(call);
  printf("ok %s: server streaming\n", label);

  /* Shutdown: the host thread's take returns -1 and it exits. */
  courier_server_shutdown(server, 1000);
  CHECK(pthread_join(host, NULL) == 0, "join");
  CHECK(courier_channel_unary(ch, ctx, echo, S("late"), NULL, &e) == NULL, "call after shutdown succeeded");
  snprintf(check, sizeof check, "%s: call after shutdown", label);
  expect_err(check, e, COURIER_ERROR_KIND_STATUS, 14, "");
  courier_method_free(echo);
  courier_method_free(fail);
  courier_method_free(missing);
  courier_method_free(stream);
  courier_ctx_free(ctx);
  courier_ctx_free(bg);
  courier_channel_free(ch);
  courier_server_free(server);
  printf("ok %s: shutdown\n", label);
}

int main(void) {
  CourierError *e = NULL;
  CourierStr v = courier_version();
  CHECK(v.len > 0, "empty version");
  printf("ok version %.*s\n", (int)v.len, (const char *)v.ptr);

  /* Invalid arguments: errors with a kind and a message, never a crash. */
  CHECK(courier_server_listen(NULL, S("127.0.0.1:0"), &e) == -1, "listen on NULL server");
  expect_err("NULL server", e, COURIER_ERROR_KIND_INVALID_ARGUMENT, 3, "server is NULL");
  e = NULL;
  CHECK(courier_channel_new((const uint8_t *)"\xff\xfe:1", 4, NULL, &e) == NULL, "channel with bad UTF-8");
  expect_err("bad UTF-8 target", e, COURIER_ERROR_KIND_INVALID_ARGUMENT, 3, "UTF-8");
  e = NULL;
  CHECK(courier_channel_new(NULL, 5, NULL, &e) == NULL, "channel with NULL target");
  expect_err("NULL target with a length", e, COURIER_ERROR_KIND_INVALID_ARGUMENT, 3, "NULL pointer");
  e = NULL;
  CHECK(courier_method_new(S("/c.test.T/M"), 7, 1000, NULL, 0, &e) == NULL, "method kind 7");
  expect_err("unknown method kind", e, COURIER_ERROR_KIND_INVALID_ARGUMENT, 3, "unknown method kind 7");
  e = NULL;
  CHECK(courier_method_new(S("/c.test.T/M"), COURIER_METHOD_KIND_UNARY, 0, NULL, 0, &e) == NULL, "deadline 0");
  expect_err("zero default deadline", e, COURIER_ERROR_KIND_INVALID_ARGUMENT, 3, "default deadline");
  CHECK(courier_channel_unary(NULL, NULL, NULL, NULL, 0, NULL, NULL) == NULL, "unary on NULLs, err NULL");
  CHECK(courier_error_kind(NULL) == COURIER_ERROR_KIND_INVALID_ARGUMENT, "kind of a NULL error");
  CHECK(courier_ctx_with_timeout(NULL, 1000) == NULL, "child of a NULL ctx");
  courier_server_free(NULL);
  courier_channel_free(NULL);
  courier_ctx_free(NULL);
  courier_error_free(NULL);
  courier_call_free(NULL);
  courier_reply_free(NULL);
  printf("ok NULL handles\n");

#ifdef COURIER_DEBUG_PANIC
  e = NULL;
  CHECK(!courier_debug_panic(&e), "courier_debug_panic returned true");
  expect_err("panic", e, COURIER_ERROR_KIND_PANIC, 13, "panic in courier-ffi: courier_debug_panic called");
#endif

  /* The server. */
  e = NULL;
  CourierServer *server = new_server();
  CHECK(!courier_server_register(server, S("/c.test.T/Echo"), COURIER_METHOD_KIND_UNARY, 5000, NULL, 0, 9, &e),
        "second Echo registered");
  expect_err("duplicate method", e, COURIER_ERROR_KIND_INVALID_ARGUMENT, 3, "/c.test.T/Echo");
  e = NULL;
  CHECK(!courier_server_register(server, (const uint8_t *)"/c.test.T/\xc3", 11, 0, 5000, NULL, 0, 9, &e),
        "bad UTF-8 path registered");
  expect_err("bad UTF-8 method path", e, COURIER_ERROR_KIND_INVALID_ARGUMENT, 3, "UTF-8");
  e = NULL;
  CHECK(courier_server_listen(server, S("127.0.0.1:99999"), &e) == -1, "listen on port 99999");
  expect_err("bad listen address", e, COURIER_ERROR_KIND_IO, 14, "cannot listen on 127.0.0.1:99999");
  e = NULL;
  int port = courier_server_listen(server, S("127.0.0.1:0"), &e);
  CHECK(port > 0, "listen");
  CHECK(courier_server_start(server, &e), "start");
  CHECK(!courier_server_start(server, &e), "started twice");
  expect_err("second start", e, COURIER_ERROR_KIND_STATE, 9, "");
  e = NULL;
  pthread_t host;
  CHECK(pthread_create(&host, NULL, serve, server) == 0, "pthread_create");

  exercise("take", server, host, port);

  /* A second server, served through courier_server_next_batch. */
  server = new_server();
  port = courier_server_listen(server, S("127.0.0.1:0"), &e);
  CHECK(port > 0 && courier_server_start(server, &e), "listen and start");
  CHECK(pthread_create(&host, NULL, serve_batches, server) == 0, "pthread_create");
  exercise("next_batch", server, host, port);
  printf("ok done\n");
  return 0;
}
