"""rclpy nodes: one per file, each a thin adapter over the ROS-free core, and `run` for their main()."""


def run(node_class, args=None, threads: int = 1) -> None:
    """Init rclpy, spin one node (on a multi-threaded executor when threads > 1) until Ctrl-C or an
    external shutdown, then destroy it and shut down (Jazzy style)."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor

    rclpy.init(args=args)
    node = node_class()
    executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
