package io.courier.testpeer;

import bench.EchoOuterClass.Req;
import bench.EchoOuterClass.Resp;
import io.grpc.Server;
import io.grpc.ServerServiceDefinition;
import io.grpc.netty.shaded.io.grpc.netty.NettyServerBuilder;
import io.grpc.netty.shaded.io.netty.channel.EventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.ServerChannel;
import io.grpc.netty.shaded.io.netty.channel.epoll.Epoll;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollEventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollServerSocketChannel;
import io.grpc.netty.shaded.io.netty.channel.nio.NioEventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.socket.nio.NioServerSocketChannel;
import io.grpc.stub.ServerCalls;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;

/**
 * `server [--listen HOST:PORT] [--threads N | --direct] [--event-loop-threads N]
 * [--services test,echo] [--ignore-stdin]`: a stock grpc-java (Netty) server of
 * courier.test.Test and bench.Echo. Prints `PORT <n>` once listening; stops
 * (1 s grace) when stdin reaches end-of-file, unless --ignore-stdin, and on
 * SIGTERM/SIGINT.
 */
final class PeerServer {
    private PeerServer() {}

    static final String USAGE = """
            usage: courier-grpc-java-peer server [--listen HOST:PORT] [--threads N | --direct]
                   [--event-loop-threads N] [--services test,echo] [--ignore-stdin]
              --listen              address to bind (default 127.0.0.1:0; the port is printed as PORT <n>)
              --threads N           handlers run on a fixed pool of N threads (default: grpc-java's cached pool)
              --direct              handlers run on the event-loop threads (grpc-java's directExecutor)
              --event-loop-threads  Netty worker event-loop threads (default: Netty's, 2 x cores); 1 boss thread
              --services            which services to serve (default test,echo)
              --ignore-stdin        do not stop when stdin closes
            """;

    static int run(String[] args) throws IOException, InterruptedException {
        String listen = "127.0.0.1:0";
        int threads = 0;
        boolean direct = false;
        int eventLoopThreads = 0;
        String services = "test,echo";
        boolean watchStdin = true;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--listen" -> listen = arg(args, ++i, "--listen needs HOST:PORT");
                case "--threads" -> threads = positive(arg(args, ++i, "--threads needs a number"), "--threads");
                case "--direct" -> direct = true;
                case "--event-loop-threads" ->
                        eventLoopThreads = positive(arg(args, ++i, "--event-loop-threads needs a number"), "--event-loop-threads");
                case "--services" -> services = arg(args, ++i, "--services needs a list");
                case "--ignore-stdin" -> watchStdin = false;
                case "-h", "--help" -> {
                    System.out.print(USAGE);
                    return 0;
                }
                default -> {
                    return usage("unknown argument " + args[i]);
                }
            }
        }
        if (direct && threads > 0) {
            return usage("--direct and --threads exclude each other");
        }
        int colon = listen.lastIndexOf(':');
        if (colon < 0) {
            return usage("--listen needs HOST:PORT, got " + listen);
        }
        String host = listen.substring(0, colon);
        if (host.startsWith("[") && host.endsWith("]")) {
            host = host.substring(1, host.length() - 1);
        }
        int port = Integer.parseInt(listen.substring(colon + 1));

        boolean epoll = Epoll.isAvailable();
        EventLoopGroup boss = epoll ? new EpollEventLoopGroup(1) : new NioEventLoopGroup(1);
        EventLoopGroup workers = epoll ? new EpollEventLoopGroup(eventLoopThreads) : new NioEventLoopGroup(eventLoopThreads);
        Class<? extends ServerChannel> channelType = epoll ? EpollServerSocketChannel.class : NioServerSocketChannel.class;
        NettyServerBuilder b = NettyServerBuilder.forAddress(new InetSocketAddress(host, port))
                .bossEventLoopGroup(boss)
                .workerEventLoopGroup(workers)
                .channelType(channelType);
        ExecutorService pool = null;
        if (direct) {
            b.directExecutor();
        } else if (threads > 0) {
            pool = Executors.newFixedThreadPool(threads);
            b.executor(pool);
        }
        for (String s : services.split(",")) {
            switch (s.trim()) {
                case "test" -> b.addService(TestService.definition());
                case "echo" -> b.addService(echo());
                case "" -> { }
                default -> {
                    return usage("unknown service " + s + " (test, echo)");
                }
            }
        }
        Server server = b.build().start();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> stop(server)));
        System.out.println("PORT " + server.getPort());
        System.out.flush();
        if (watchStdin) {
            while (System.in.read(new byte[4096]) >= 0) {
                // serve until EOF
            }
            stop(server);
        } else {
            server.awaitTermination();
        }
        if (pool != null) {
            pool.shutdownNow();
        }
        boss.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        workers.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        return 0;
    }

    /** bench.Echo/Echo: answers the request's `s`. */
    static ServerServiceDefinition echo() {
        return ServerServiceDefinition.builder(Protos.ECHO_SERVICE)
                .addMethod(Protos.ECHO, ServerCalls.asyncUnaryCall((Req req, io.grpc.stub.StreamObserver<Resp> out) -> {
                    out.onNext(Resp.newBuilder().setS(req.getS()).build());
                    out.onCompleted();
                }))
                .build();
    }

    private static void stop(Server server) {
        server.shutdown();
        try {
            if (!server.awaitTermination(1, TimeUnit.SECONDS)) {
                server.shutdownNow().awaitTermination(1, TimeUnit.SECONDS);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private static String arg(String[] args, int i, String missing) {
        if (i >= args.length) {
            System.exit(usage(missing));
        }
        return args[i];
    }

    private static int positive(String s, String flag) {
        try {
            int n = Integer.parseInt(s);
            if (n > 0) {
                return n;
            }
        } catch (NumberFormatException e) {
            // below
        }
        System.exit(usage("bad " + flag + " " + s));
        return 0;
    }

    private static int usage(String msg) {
        System.err.println("courier-grpc-java-peer server: " + msg);
        System.err.print(USAGE);
        return 2;
    }
}
